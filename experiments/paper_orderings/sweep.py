"""One-factor-at-a-time sweep of beta, lambda, learning rate and generation temperature on XSum's held-out split.

    python experiments/paper_orderings/sweep.py --scale cpu [--out DIR] [--jobs N]

Reads sweep_xsum.yaml. Every point is the ``drift`` arm at ``--scale`` with one axis moved off the
center, into ``<out>/sweep/<point>``; the SFT warm start (and, for greedy points, iteration 1's
generations) come from the main study's ``<out>/xsum/sft_epoch1/seed<k>`` (run first when missing),
see shared_stages.py. Writes ``<out>/sweep/summary.json`` and ``chosen_hparams.yaml`` (the best
value per axis by held-out ROUGE-L at the last stage; ties go to the center value).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_all  # noqa: E402
import shared_stages  # noqa: E402
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


def settings_opts(s: Dict[str, Any]) -> List[str]:
    """``--field value`` options of one point's settings."""
    opts = {"learning_rate": s["learning_rate"], "beta": s["beta"], "oal_weight": s["oal_weight"]}
    if s["temperature"] == "greedy":
        opts["do_sample"] = "false"
    else:
        opts.update(do_sample="true", temperature=s["temperature"])
    return [x for k, v in opts.items() for x in (f"--{k}", str(v))]


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
        chosen[axis] = max(values, key=score)
    return chosen


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=tuple(run_all.SCALES), required=True)
    p.add_argument("--out", default=None, help="output root (default: runs/paper_orderings_<scale>)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--spec", default=str(HERE / "sweep_xsum.yaml"))
    args = p.parse_args(argv)
    spec = yaml.safe_load(Path(args.spec).read_text())
    root = Path(args.out or f"runs/paper_orderings_{args.scale}")
    task, seed = spec["task"], spec["seed"]
    log = root / "commands.txt"
    root.mkdir(parents=True, exist_ok=True)
    run_all.record(log, f"# {run_all.shown([sys.executable, *sys.argv])}   (commit {run_all.git_commit()})")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    sft_dir = root / task / "sft_epoch1" / f"seed{seed}"
    run_all.run_one(run_all.train_cmd(HERE / "configs" / f"{task}_sft_epoch1.yaml",
                                      run_all.overrides(args.scale, task, "sft_epoch1", seed, sft_dir)),
                    sft_dir, os.cpu_count() or 1, log)
    pts = points(spec)
    sweep = root / "sweep"

    def run_point(name: str, s: Dict[str, Any]) -> None:
        d = sweep / name
        # greedy points share the center's iteration-1 generations; sampled points make their own
        shared_stages.seed_self_play(d, sft_dir, sweep / "center" if s["temperature"] == "greedy" else None)
        opts = run_all.overrides(args.scale, task, "drift", seed, d)
        at = opts.index("--iterations")
        opts[at + 1] = str(spec["iterations"])
        opts += settings_opts(s)
        run_all.run_one(run_all.train_cmd(HERE / "configs" / f"{task}_drift.yaml", opts), d, threads, log)
        shared_stages.prune_weights(d)
        print(f"done sweep {name}", flush=True)

    run_point(*pts[0])  # the center's iteration-1 generations are shared by the greedy points
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(run_point, n, s) for n, s in pts[1:]]:
            f.result()
    results = {}
    for name, s in pts:
        rec = last_stage(sweep / name)
        results[name] = {**s, "stage": rec["stage"], **{k: rec[k] for k in ("rouge1", "rouge2", "rougeL")},
                         "gamma": rec.get("gamma")}
    chosen = choose(spec, results)
    (sweep / "summary.json").write_text(json.dumps({"spec": spec, "results": results, "chosen": chosen}, indent=1))
    (HERE / "chosen_hparams.yaml").write_text(
        "# written by sweep.py from the XSum held-out sweep; gen_configs.py folds it into every config\n"
        + yaml.safe_dump({"scale": args.scale, **chosen}, sort_keys=False))
    print(json.dumps(results, indent=1))
    print("chosen:", chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
