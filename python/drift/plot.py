"""``drift plot``: ROUGE per iteration, one line per run, plus gamma (the paper's Figures 2-3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

METRICS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


def iteration_records(run_dir: Path) -> List[Dict]:
    """The ``kind == "iteration"`` records of ``run_dir/metrics.jsonl``, by iteration (base = -1)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"runs: {run_dir} has no metrics.jsonl (is it a drift train output_dir?)")
    recs = {}
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("kind") == "iteration":
            recs[r["iteration"]] = r
    if not recs:
        raise ValueError(f"runs: {run_dir}/metrics.jsonl has no evaluated iteration yet")
    return [recs[k] for k in sorted(recs)]


def plot_runs(run_dirs: Sequence[Path], output: Path, metric: str = "all") -> Path:
    """Write a PNG: one panel per ROUGE metric (x = iteration, base at -1) and one for gamma.

    Args:
        run_dirs: ``output_dir`` of one or more runs; each becomes a line labelled by its run name.
        output: the PNG path (written atomically).
        metric: "all" or one of rouge1, rouge2, rougeL.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drift.trainer import io

    if metric != "all" and metric not in METRICS:
        raise ValueError(f"metric: expected 'all' or one of {list(METRICS)}, got {metric!r}")
    if not run_dirs:
        raise ValueError("runs: expected at least one run directory")
    keys = list(METRICS) if metric == "all" else [metric]
    runs = [(Path(d), iteration_records(Path(d))) for d in run_dirs]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4.2 * (len(keys) + 1), 3.6))
    for d, recs in runs:
        label = recs[-1].get("run") or recs[-1].get("method") or d.name
        if len(runs) > 1 and sum(1 for _, r in runs if (r[-1].get("run") or "") == label) > 1:
            label = f"{label} ({d.name})"
        xs = [r["iteration"] for r in recs]
        for ax, k in zip(axes, keys):
            ax.plot(xs, [r[k] for r in recs], marker="o", label=label)
        g = [(r["iteration"], r["gamma"]) for r in recs if "gamma" in r]
        if g:
            axes[-1].plot([x for x, _ in g], [y for _, y in g], marker="s", label=label)
    for ax, k in zip(axes, keys):
        ax.set_title(METRICS[k])
        ax.set_xlabel("iteration (-1: base, 0: SFT warm start)")
        ax.set_ylabel(f"{METRICS[k]} (F1, %)")
        ax.grid(alpha=0.3)
    axes[-1].set_xlim(axes[0].get_xlim())
    axes[-1].set_title("gamma = mean |LCS(y, y')| / |y|")
    axes[-1].set_xlabel("iteration")
    axes[-1].set_ylim(0, 1)
    axes[-1].grid(alpha=0.3)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    with io.atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return output
