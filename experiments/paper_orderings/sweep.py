"""One-factor-at-a-time sweep of beta, lambda, learning rate and generation temperature on XSum.

    python experiments/paper_orderings/sweep.py --scale cpu [--out DIR] [--jobs N]
    python experiments/paper_orderings/sweep.py --scale gpu --validation [--budget-s S] [--jobs N]

Reads ``--spec`` (default sweep_xsum.yaml; sweep_xsum_gpu.yaml at the gpu scale). Every point is the
``drift`` arm at ``--scale`` with one axis moved off the center, into ``<out>/sweep/<point>``; the SFT warm
start comes from the main study's ``<out>/xsum/sft_epoch1/seed<k>`` (run first when missing) and points
that generate as the center does (same temperature) share its iteration-1 generations (shared_stages.py).
The cpu sweep chose on the held-out split; ``--validation`` instead cuts a validation split from the
scale's training rows (their last fifth; the held-out rows are never read), with its own warm start in
``<out>/sweep/sft_epoch1``. ``--budget-s S`` starts no point expected to end past S seconds. With
``--grad-norms`` (default at the gpu scale) it writes ``<out>/sweep/grad_norms.json`` (grad_norms.py: the DAM
and lambda x OAL gradient norms at the warm start, per beta and lambda of the spec). Writes
``<out>/sweep/summary.json``, ``<out>/sweep/chosen.yaml`` and the choice (the best value per axis by ROUGE-L at
the last stage; ties go to the center value) into ``chosen_hparams.yaml`` (cpu; gen_configs.py folds it into
the configs) or ``chosen_hparams_<scale>.yaml`` (other scales; run_all.py passes it as options).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_all  # noqa: E402
import shared_stages  # noqa: E402
from gen_configs import chosen_file  # noqa: E402
from make_results import read_iterations  # noqa: E402

from drift.trainer.layout import RunLayout  # noqa: E402


def point_name(axis: str, value: Any) -> str:
    return f"{axis}={value}"


def points(spec: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """(name, settings) per sweep point: the center first, then each axis' other values."""
    center = dict(spec["center"])
    out = [("center", center)]
    for axis, values in spec["axes"].items():
        for v in values:
            if v != center[axis]:
                out.append((point_name(axis, v), {**center, axis: v}))
    return out


settings_opts = run_all.settings_opts  # ``--field value`` options of one point's settings


def validation_split(scale: str, task: str, out: Path) -> Path:
    """Write ``out``: the scale's training ids cut into train (first four fifths) and validation (last fifth,
    at least 1) as a split file; the held-out ids are left out. Returns ``out``."""
    src = json.loads(run_all.split_file(scale, task).read_text())
    train = src["train_ids"]
    n_val = max(1, len(train) // 5)
    if len(train) - n_val < 1:
        raise ValueError(f"validation: {task} at {scale} has {len(train)} training rows, too few to cut")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**src, "train_ids": train[:-n_val], "eval_ids": train[-n_val:],
                               "cut_from": run_all.split_file(scale, task).name}) + "\n")
    return out


def with_split(opts: List[str], split: Path) -> List[str]:
    """``opts`` reading ``split`` (its train and validation ids) instead of the scale's split file."""
    ids = json.loads(split.read_text())
    opts = list(opts)
    for key, value in (("--split_file", str(split)), ("--num_train_examples", str(len(ids["train_ids"]))),
                       ("--num_eval_examples", str(len(ids["eval_ids"])))):
        opts[opts.index(key) + 1] = value
    return opts


def last_stage(run_dir: Path) -> Dict[str, Any]:
    recs = read_iterations(RunLayout(run_dir).metrics)
    return recs[-1]


def choose(spec: Dict[str, Any], results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Best value per axis by ``select_on`` (ties: the center value)."""
    key, center = spec["select_on"], spec["center"]
    chosen = {}
    for axis, values in spec["axes"].items():
        def score(v):
            name = "center" if v == center[axis] else point_name(axis, v)
            return (results[name][key], v == center[axis])
        present = [v for v in values if ("center" if v == center[axis] else point_name(axis, v)) in results]
        chosen[axis] = max(present, key=score)
    for axis in center:  # axes the spec does not sweep keep the center value
        chosen.setdefault(axis, center[axis])
    return chosen


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=tuple(run_all.SCALES), required=True)
    p.add_argument("--out", default=None, help="output root (default: runs/paper_orderings_<scale>)")
    p.add_argument("--jobs", type=int, default=None, help="points at once (default: run_all.DEFAULT_JOBS of the scale)")
    p.add_argument("--spec", default=None, help="default: sweep_xsum_gpu.yaml at the gpu scale, else sweep_xsum.yaml")
    p.add_argument("--validation", action="store_true", help="choose on a validation split cut from the training rows")
    p.add_argument("--budget-s", type=float, default=None, help="start no point expected to end past this many seconds")
    p.add_argument("--grad-norms", choices=("auto", "yes", "no"), default="auto",
                   help="write sweep/grad_norms.json (auto: at the gpu scale)")
    p.add_argument("--model", default=None, help="model folder instead of SmolLM2 (a stand-in for rehearsals)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    spec_path = Path(args.spec) if args.spec else HERE / ("sweep_xsum_gpu.yaml" if args.scale == "gpu" else "sweep_xsum.yaml")
    spec = yaml.safe_load(spec_path.read_text())
    jobs = args.jobs or run_all.DEFAULT_JOBS[args.scale]
    root = Path(args.out or f"runs/paper_orderings_{args.scale}")
    task, seed = spec["task"], spec["seed"]
    log = root / "commands.txt"
    root.mkdir(parents=True, exist_ok=True)
    run_all.record(log, f"# {run_all.shown([sys.executable, *sys.argv])}   (commit {run_all.git_commit()})")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    sweep = root / "sweep"
    split = validation_split(args.scale, task, sweep / "validation_split.json") if args.validation else None

    def opts_for(arm: str, d: Path) -> List[str]:
        opts = run_all.overrides(args.scale, task, arm, seed, d, args.model, chosen=False)
        return with_split(opts, split) if split is not None else opts

    sft_dir = sweep / "sft_epoch1" if split is not None else root / task / "sft_epoch1" / f"seed{seed}"
    run_all.run_one(run_all.train_cmd(HERE / "configs" / f"{task}_sft_epoch1.yaml", opts_for("sft_epoch1", sft_dir)),
                    sft_dir, os.cpu_count() or 1, log)
    pts = points(spec)
    center_temp = spec["center"]["temperature"]
    walls: List[float] = []
    expected = run_all.EXPECTED_S.get(args.scale, {}).get("drift", 0.0) / max(1, run_all.SCALES[args.scale].get("iterations", 1))

    def run_point(name: str, s: Dict[str, Any]) -> None:
        d = sweep / name
        if args.budget_s is not None and not (d / "wall_s.txt").is_file() and \
                time.monotonic() - t0 + (max(walls) if walls else expected) > args.budget_s:
            print(f"skip sweep {name}: budget", flush=True)
            return
        # points that generate as the center does share its iteration-1 generations; the others make their own
        shared_stages.seed_self_play(d, sft_dir, sweep / "center" if name != "center" and s["temperature"] == center_temp else None)
        opts = opts_for("drift", d)
        at = opts.index("--iterations")
        opts[at + 1] = str(spec["iterations"])
        opts += settings_opts(s)
        walls.append(run_all.run_one(run_all.train_cmd(HERE / "configs" / f"{task}_drift.yaml", opts), d, threads, log))
        shared_stages.prune_weights(d)
        print(f"done sweep {name}", flush=True)

    def run_grad_norms() -> None:
        axes = spec["axes"]
        cmd = [sys.executable, str(HERE / "grad_norms.py"), "--run", str(sweep / "center"),
               "--model", str(RunLayout(sft_dir).model(0)), "--output", str(sweep / "grad_norms.json"),
               "--betas", *map(str, axes.get("beta", [spec["center"]["beta"]])),
               "--lambdas", *map(str, axes.get("oal_weight", [spec["center"]["oal_weight"]]))]
        run_all.run_logged(cmd, sweep / "grad_norms.log", threads, log)
        print("done sweep grad norms", flush=True)

    run_point(*pts[0])  # the center's iteration-1 generations are shared by the points that sample alike
    grad = args.grad_norms == "yes" or (args.grad_norms == "auto" and args.scale == "gpu")
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(run_grad_norms)] if grad else []
        futures += [pool.submit(run_point, n, s) for n, s in pts[1:]]
        for f in futures:
            f.result()
    results = {}
    for name, s in pts:
        if not (sweep / name / "wall_s.txt").is_file():
            continue
        rec = last_stage(sweep / name)
        results[name] = {**s, "stage": rec["stage"], **{k: rec[k] for k in ("rouge1", "rouge2", "rougeL")},
                         "gamma": rec.get("gamma")}
    chosen = choose(spec, results)
    split_name = "validation (cut from the training rows)" if split is not None else "held-out"
    (sweep / "summary.json").write_text(json.dumps({"spec": spec, "split": split_name, "results": results,
                                                    "chosen": chosen}, indent=1))
    values = yaml.safe_dump({"scale": args.scale, **chosen}, sort_keys=False)
    text = f"# written by sweep.py from the XSum {split_name} sweep at the {args.scale} scale\n" + values
    (sweep / "chosen.yaml").write_text(text)
    chosen_file(args.scale).write_text(
        text if args.scale != "cpu" else
        "# written by sweep.py from the XSum held-out sweep; gen_configs.py folds it into every config\n" + values)
    print(json.dumps(results, indent=1))
    print("chosen:", chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
