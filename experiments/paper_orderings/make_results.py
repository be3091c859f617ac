"""Generate the paper-orderings results page from the runs' metrics.jsonl files.

    python experiments/paper_orderings/make_results.py --runs runs/paper_orderings_gpu --output docs/RESULTS.md

Layout read: ``<runs>/<task>/<arm>/seed<k>/metrics.jsonl`` (as run_all.py writes). Tables: ROUGE-1/2/L
mean +- std over seeds per arm and stage, gamma per iteration, compute time per arm; the claims of
METHOD.md with a verdict each: 'holds' when the ordering holds by more than the larger seed std,
'does not hold' when it is reversed by more than that, else 'inconclusive'.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

METRICS = ("rouge1", "rouge2", "rougeL")
TIME_KEYS = ("train_s", "eval_s", "generation_s", "reference_s", "lcs_mask_s")


def read_iterations(path: Path) -> List[dict]:
    """The ``kind == "iteration"`` records of one metrics.jsonl; the last record per stage wins (resumes)."""
    by_stage: Dict[str, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("kind") == "iteration":
                by_stage[rec["stage"]] = rec
    return sorted(by_stage.values(), key=lambda r: r["iteration"])


def mean_std(values: List[float]) -> Tuple[float, float]:
    """Mean and sample std (0 for one value) of a non-empty list."""
    if not values:
        raise ValueError("values: expected at least one number")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def collect(root: Path) -> Dict[str, Dict[str, Dict[str, List[dict]]]]:
    """task -> arm -> seed dir name -> iteration records."""
    out: Dict[str, Dict[str, Dict[str, List[dict]]]] = {}
    for m in sorted(Path(root).glob("*/*/seed*/metrics.jsonl")):
        seed_dir = m.parent
        out.setdefault(seed_dir.parent.parent.name, {}).setdefault(seed_dir.parent.name, {})[seed_dir.name] = (
            read_iterations(m))
    return out


def stage_stats(seeds: Dict[str, List[dict]], key: str) -> Dict[str, Tuple[float, float, int]]:
    """stage -> (mean, std, n seeds) of ``key`` over seeds."""
    vals: Dict[str, List[float]] = {}
    for recs in seeds.values():
        for r in recs:
            if key in r:
                vals.setdefault(r["stage"], []).append(float(r[key]))
    return {s: (*mean_std(v), len(v)) for s, v in vals.items()}


def final(seeds: Dict[str, List[dict]], key: str = "rougeL", stage: Optional[str] = None) -> Optional[Tuple[float, float]]:
    """Mean, std over seeds of ``key`` at ``stage`` (default: each seed's last stage)."""
    vals = []
    for recs in seeds.values():
        pick = [r for r in recs if key in r and (stage is None or r["stage"] == stage)]
        if pick:
            vals.append(float(pick[-1][key]))
    return mean_std(vals) if vals else None


def verdict(a: Optional[Tuple[float, float]], b: Optional[Tuple[float, float]]) -> str:
    """Claim 'a > b': holds / does not hold / inconclusive (difference within the larger std) / missing."""
    if a is None or b is None:
        return "missing runs"
    diff, spread = a[0] - b[0], max(a[1], b[1])
    if abs(diff) <= spread:
        return "inconclusive"
    return "holds" if diff > 0 else "does not hold"


def _fmt(ms: Optional[Tuple[float, float]]) -> str:
    return "-" if ms is None else f"{ms[0]:.2f} ± {ms[1]:.2f}"


def claims(arms: Dict[str, Dict[str, List[dict]]], key: str = "rougeL") -> List[Tuple[str, str, str]]:
    """(claim, numbers, verdict) rows for one task."""
    g = lambda arm, stage=None: final(arms[arm], key, stage) if arm in arms else None
    pairs = [
        ("DRIFT > SPIN", g("drift"), g("spin")),
        ("SPIN > continued SFT (SFT epoch 2)", g("spin"), g("sft_epoch2")),
        ("SFT epoch 2 < SFT epoch 1", g("sft_epoch1"), g("sft_epoch2")),
        ("DRIFT > DRIFT without DAM", g("drift"), g("drift_no_dam")),
        ("DRIFT > DRIFT without OAL", g("drift"), g("drift_no_oal")),
        # same training budget: iteration 2 vs iteration 1 + 1 more epoch on its data (both stage iter_2)
        ("iteration 2 > more epochs on iteration-1 data", g("drift", "iter_2"), g("drift_extra_epochs", "iter_2")),
    ]
    rows = [(c, f"{_fmt(a)} vs {_fmt(b)}", verdict(a, b)) for c, a, b in pairs]
    if "drift" in arms:
        gam = stage_stats(arms["drift"], "gamma")
        stages = sorted(gam, key=lambda s: int(s.split("_")[-1]) if s.split("_")[-1].isdigit() else -1)
        if len(stages) >= 2:
            first, last = gam[stages[0]][:2], gam[stages[-1]][:2]
            rows.append((f"gamma rises across iterations (DRIFT, {stages[0]} -> {stages[-1]})",
                         f"{_fmt(last)} vs {_fmt(first)}", verdict(last, first)))
        else:
            rows.append(("gamma rises across iterations", "-", "missing runs"))
    return rows


def render(root: Path, title: str = "Paper orderings: results", page_dir: Optional[Path] = None) -> str:
    """The markdown page for all runs under ``root``; image links relative to ``page_dir`` (default: cwd)."""
    data = collect(root)
    if not data:
        raise ValueError(f"runs: no <task>/<arm>/seed*/metrics.jsonl under {root}")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    lines = [f"# {title}", "", "Generated by `experiments/paper_orderings/make_results.py`; do not edit by hand.", "",
             f"Git commit: `{commit}`", ""]
    cmds = Path(root) / "commands.txt"
    if cmds.is_file():
        lines += ["## Commands", "", "```", *dict.fromkeys(cmds.read_text().splitlines()), "```", ""]
    for task, arms in data.items():
        lines += [f"## {task}", "", "### ROUGE (held-out, mean ± std over seeds)", "",
                  "| arm | stage | seeds | ROUGE-1 | ROUGE-2 | ROUGE-L |", "|---|---|---|---|---|---|"]
        for arm, seeds in arms.items():
            st = {m: stage_stats(seeds, m) for m in METRICS}
            for stage in sorted(st["rougeL"], key=lambda s: (s != "base", s)):
                n = st["rougeL"][stage][2]
                lines.append(f"| {arm} | {stage} | {n} | " + " | ".join(_fmt(st[m][stage][:2]) for m in METRICS) + " |")
        lines += ["", "### gamma per iteration (mean ± std over seeds)", "", "| arm | stage | gamma |", "|---|---|---|"]
        for arm, seeds in arms.items():
            for stage, (m, s, _) in sorted(stage_stats(seeds, "gamma").items()):
                lines.append(f"| {arm} | {stage} | {m:.4f} ± {s:.4f} |")
        lines += ["", "### Compute time per arm (sum of stage timings, mean ± std over seeds, seconds)", "",
                  "| arm | seconds |", "|---|---|"]
        for arm, seeds in arms.items():
            tot = [sum(float(r.get(k, 0.0)) for r in recs for k in TIME_KEYS) for recs in seeds.values()]
            lines.append(f"| {arm} | {_fmt(mean_std(tot))} |")
        lines += ["", "### The paper's claims (final-stage ROUGE-L; verdict against the seed spread)", "",
                  "| claim | numbers | verdict |", "|---|---|---|"]
        lines += [f"| {c} | {n} | {v} |" for c, n, v in claims(arms)]
        png = Path(root) / f"{task}_rouge.png"
        if png.is_file():
            rel = os.path.relpath(png.resolve(), Path(page_dir or ".").resolve())
            lines += ["", f"![{task} ROUGE per iteration]({Path(rel).as_posix()})"]
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="output root of run_all.py")
    p.add_argument("--output", required=True, help="markdown file to write (docs/RESULTS.md only for full runs)")
    args = p.parse_args(argv)
    text = render(Path(args.runs), page_dir=Path(args.output).parent)
    Path(args.output).write_text(text)
    for line in text.splitlines():
        if line.startswith("## "):
            print(line)
        if line.startswith("| ") and ("holds" in line or "inconclusive" in line or "missing" in line):
            print(line)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
