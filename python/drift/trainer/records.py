"""The records a run returns and prints: one ``kind: iteration`` record per evaluated stage, and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from drift.trainer.results import Evaluation
from drift.trainer.run import Run


class Records(list):
    """The per-iteration records :func:`train` returns, with the run's ``output_dir`` (a Path)."""

    output_dir: Optional[Path] = None


def iteration_logged(run: Run, index: int) -> bool:
    """Whether stage ``index``'s iteration record is in the log already (the stage is finished and reported)."""
    return run.log.has(lambda r: r.get("kind") == "iteration" and r.get("iteration") == index)


def record_iteration(run: Run, index: int, name: str, ev: Optional[Evaluation], extra: Dict[str, Any],
                     global_step: int) -> None:
    """Log stage ``name``'s iteration record (scores of its evaluation ``ev``, ``extra``); the caller has checked
    :func:`iteration_logged` (the loop asks once per stage, before its evaluation)."""
    config = run.config
    scores = {} if ev is None else ev.scores()  # eval_metric none: no scores
    rec = {"kind": "iteration", "iteration": index, "stage": name, "method": config.method, "run": config.label,
           **scores, "global_step": global_step, **extra}  # trackers plot it at the step the stage ended
    run.emit(rec)


def format_table(records: List[Dict[str, Any]]) -> str:
    """A plain-text ROUGE table, one row per evaluated stage."""
    lines = [f"{'stage':<8} {'method':<13} {'ROUGE-1':>7} {'ROUGE-2':>7} {'ROUGE-L':>7} {'gamma':>6} {'gen_s':>6} {'train_s':>7}"]
    for r in sorted(records, key=lambda r: r["iteration"]):
        method = r["method"] if r["stage"] != "base" else "-"
        if r.get("kind_of_stage") == "sft" and r["method"] != "sft":
            method = "sft (warm)"
        gamma = f"{r['gamma']:.3f}" if "gamma" in r else "-"
        gen = f"{r['generation_s']:.0f}" if "generation_s" in r else "-"
        tr = f"{r['train_s']:.0f}" if "train_s" in r else "-"
        r1, r2, rl = (f"{r[k]:>7.2f}" if k in r else f"{'-':>7}" for k in ("rouge1", "rouge2", "rougeL"))
        lines.append(f"{r['stage']:<8} {method:<13} {r1} {r2} {rl} {gamma:>6} {gen:>6} {tr:>7}")
    return "\n".join(lines)

