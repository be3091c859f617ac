"""The records a run returns and prints: one ``kind: iteration`` record per evaluated stage, and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from drift.trainer.run import Run


class Records(list):
    """The per-iteration records :func:`train` returns, with the run's ``output_dir`` (a Path)."""

    output_dir: Optional[Path] = None


def record_iteration(run: Run, index: int, name: str, ev: Optional[Dict[str, Any]], extra: Dict[str, Any],
                     global_step: int) -> None:
    """Log stage ``name``'s iteration record (scores of its evaluation ``ev``, ``extra``) unless logged already."""
    if run.log.has(lambda r: r.get("kind") == "iteration" and r.get("iteration") == index):
        return
    config = run.config
    scores = {} if ev is None else {"rouge1": ev["rouge1"], "rouge2": ev["rouge2"], "rougeL": ev["rougeL"],
                                    "eval_s": ev["seconds"]}  # eval_metric none: no scores
    diag = (ev or {}).get("diagnostics") or {}
    scores.update({f"diag_{k}": v for k, v in diag.items()
                   if k != "seconds" and (isinstance(v, (int, float)) or v is None)})
    if "seconds" in diag:  # the diagnostics' forward pass, not part of eval_s (generation + ROUGE)
        scores["diag_s"] = diag["seconds"]
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

