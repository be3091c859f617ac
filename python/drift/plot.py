"""``drift plot``: ROUGE per iteration, one line per run, plus gamma (the paper's Figures 2-3)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

METRICS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


def _records(run_dir: Path, kind: str) -> List[Dict]:
    from drift.trainer.layout import RunLayout
    from drift.trainer.metrics_log import read_metrics

    path = RunLayout(run_dir).metrics
    if not path.is_file():
        raise FileNotFoundError(f"runs: {run_dir} has no metrics.jsonl (is it a drift train output_dir?)")
    return read_metrics(path, kind)


def iteration_records(run_dir: Path) -> List[Dict]:
    """The ``kind == "iteration"`` records of ``run_dir/metrics.jsonl`` (read_metrics), by iteration (base = -1)."""
    recs = _records(run_dir, "iteration")
    if not recs:
        raise ValueError(f"runs: {run_dir}/metrics.jsonl has no evaluated iteration yet")
    return sorted(recs, key=lambda r: r["iteration"])


FORMATS = ("png", "pdf", "svg")


def step_records(run_dir: Path) -> List[Dict]:
    """The ``kind == "step"`` records of ``run_dir/metrics.jsonl`` (read_metrics), by global step (for loss curves)."""
    out = [r for r in _records(run_dir, "step") if "global_step" in r]
    if not out:
        raise ValueError(f"runs: {run_dir}/metrics.jsonl has no training step yet")
    return sorted(out, key=lambda r: r["global_step"])


def _format(output: Path) -> str:
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"--output: {output.name}: expected a .png, .pdf or .svg file name")
    return fmt


def _labels(run_dirs: Sequence[Path], last: Sequence[Dict]) -> List[str]:
    """One legend label per run: its run name, with the folder name where names repeat."""
    names = [r.get("run") or r.get("method") or Path(d).name for d, r in zip(run_dirs, last)]
    return [f"{n} ({Path(d).name})" if names.count(n) > 1 else n for n, d in zip(names, run_dirs)]


def _legend(fig, axes, n_runs: int) -> None:
    """The legend below the panels, never over the lines (one column per run up to 4)."""
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        return
    ncol = min(n_runs, 4)
    rows = -(-n_runs // ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * rows, 1, 1))


def _x_label(records: Sequence[Sequence[Dict]]) -> str:
    """'iteration', with the special stages only where a run has them."""
    marks = []
    if any(r["iteration"] == -1 for recs in records for r in recs):
        marks.append("-1: base")
    if any(r["iteration"] == 0 and r.get("kind_of_stage", "sft") == "sft" for recs in records for r in recs):
        marks.append("0: SFT warm start")
    return f"iteration ({', '.join(marks)})" if marks else "iteration"


def plot_runs(run_dirs: Sequence[Path], output: Path, metric: str = "all") -> Path:
    """Write a figure (PNG, PDF or SVG by the file name): ROUGE per iteration and gamma, or the loss curves.

    Args:
        run_dirs: ``output_dir`` of one or more runs; each becomes a line labelled by its run name.
        output: the figure's path (written atomically); its suffix picks the format.
        metric: "all" or one of rouge1, rouge2, rougeL (one panel per ROUGE metric, x = iteration,
            plus gamma), "loss" (the training loss and reward margins per optimizer step), or
            "diagnostics" (per iteration: the references' difference- vs LCS-token log-probs and
            the generations' vocabulary recall / precision, docs/EVALUATION.md).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drift import atomic

    if metric not in ("all", "loss", "diagnostics") and metric not in METRICS:
        raise ValueError(f"metric: expected 'all', 'loss', 'diagnostics' or one of {list(METRICS)}, got {metric!r}")
    if not run_dirs:
        raise ValueError("runs: expected at least one run directory")
    output = Path(output)
    fmt = _format(output)
    if metric == "loss":
        fig = _loss_figure(plt, [Path(d) for d in run_dirs])
    elif metric == "diagnostics":
        fig = _diagnostics_figure(plt, [Path(d) for d in run_dirs])
    else:
        fig = _rouge_figure(plt, [Path(d) for d in run_dirs], list(METRICS) if metric == "all" else [metric])
    with atomic.atomic_path(output) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    plt.close(fig)
    return output


def _rouge_figure(plt, run_dirs: List[Path], keys: List[str]):
    runs = [iteration_records(d) for d in run_dirs]
    labels = _labels(run_dirs, [recs[-1] for recs in runs])
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4.2 * (len(keys) + 1), 3.6))
    for label, recs in zip(labels, runs):
        xs = [r["iteration"] for r in recs]
        for ax, k in zip(axes, keys):
            ax.plot(xs, [r[k] for r in recs], marker="o", label=label)
        g = [(r["iteration"], r["gamma"]) for r in recs if "gamma" in r]
        axes[-1].plot([x for x, _ in g], [y for _, y in g], marker="s", label=label)
    ticks = sorted({r["iteration"] for recs in runs for r in recs})
    for ax, k in zip(axes, keys):
        ax.set_title(METRICS[k])
        ax.set_xlabel(_x_label(runs))
        ax.set_ylabel(f"{METRICS[k]} (F1, %)")
    axes[-1].set_title("gamma = mean |LCS(y, y')| / |y|")
    axes[-1].set_xlabel("iteration")
    axes[-1].set_ylim(0, 1)
    for ax in axes:  # whole iterations only, even for a one-stage run
        ax.set_xticks(ticks)
        ax.set_xlim(ticks[0] - 0.5, ticks[-1] + 0.5)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend(fig, axes, len(runs))
    return fig


def _diagnostics_figure(plt, run_dirs: List[Path]):
    runs = [[r for r in iteration_records(d) if "diag_vocab_recall" in r] for d in run_dirs]
    for d, recs in zip(run_dirs, runs):
        if not recs:
            raise ValueError(f"runs: {d} has no diagnostics (trained with eval_diagnostics false or before they existed)")
    labels = _labels(run_dirs, [recs[-1] for recs in runs])
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
    panels = ((axes[0], ("diag_logp_difference", "diag_logp_lcs"), "reference log-prob: difference (-) vs LCS (--)"),
              (axes[1], ("diag_vocab_recall", "diag_vocab_precision"), "vocabulary recall (-) / precision (--)"))
    for label, recs in zip(labels, runs):
        xs = [r["iteration"] for r in recs]
        for ax, (solid, dashed), _ in panels:
            line = ax.plot(xs, [r.get(solid) for r in recs], marker="o", label=label)[0]
            ax.plot(xs, [r.get(dashed) for r in recs], marker="o", linestyle="--", color=line.get_color())
    ticks = sorted({r["iteration"] for recs in runs for r in recs})
    for ax, _, title in panels:
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(_x_label(runs))
        ax.set_xticks(ticks)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1)
    fig.tight_layout()
    _legend(fig, axes, len(runs))
    return fig


def _loss_figure(plt, run_dirs: List[Path]):
    runs = [step_records(d) for d in run_dirs]
    labels = _labels(run_dirs, [recs[-1] for recs in runs])
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
    for label, recs in zip(labels, runs):
        axes[0].plot([r["global_step"] for r in recs], [r["loss"] for r in recs], label=label)
        margins = [(r["global_step"], r["rewards/margins"]) for r in recs if "rewards/margins" in r]
        axes[1].plot([x for x, _ in margins], [y for _, y in margins], label=label)
    axes[0].set_title("training loss")
    axes[1].set_title("reward margin r(y) - r(y')")
    for ax in axes:
        ax.set_xlabel("optimizer step (all stages)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend(fig, axes, len(runs))
    return fig
