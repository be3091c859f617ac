"""One self-play iteration, SPIN vs DRIFT, on the same model and data: what do DAM + OAL cost?

Runs ``drift.trainer.train`` twice (method spin, method drift; 1 iteration, no evaluation) and
reports each stage's wall time, the DRIFT - SPIN difference, and the share of DRIFT's
iteration spent in LCS masking (the masks stage) and in the occurrence-aware loss (its
forward + backward, replayed on the logits shapes the training steps used). DESIGN.md
section 5 asks for LCS masking + OAL < 5% of the iteration.

    drift bench iteration                    # SmolLM2-135M on XSum (CPU: a few minutes)
    drift bench iteration --num_train_examples 16 --csv benchmarks/results/iteration.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=Path(__file__).parent, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class OalRecorder:
    """Wraps ``drift.losses.oal_loss`` to record the (B, T, V) shapes and dtypes it is called with."""

    def __init__(self) -> None:
        import drift.losses as losses

        self.losses, self.original, self.shapes = losses, losses.oal_loss, []

    def __enter__(self) -> "OalRecorder":
        def recording(logits, targets, **kw):
            self.shapes.append((tuple(logits.shape), logits.dtype, tuple(targets.shape)))
            return self.original(logits, targets, **kw)

        self.losses.oal_loss = recording
        return self

    def __exit__(self, *exc) -> None:
        self.losses.oal_loss = self.original


def replay_oal(shapes, device: str, repeats: int = 3) -> float:
    """Median seconds of oal_loss forward + backward summed over the recorded calls."""
    import drift

    totals = []
    for _ in range(repeats):
        total = 0.0
        for (b, t, v), dtype, (tb, tm) in shapes:
            logits = torch.randn(b, t, v, dtype=dtype, device=device, requires_grad=True)
            targets = torch.randint(0, v, (tb, tm), device=device)
            mask = torch.ones(b, t, dtype=torch.bool, device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            drift.oal_loss(logits, targets, logits_mask=mask).backward()
            if device == "cuda":
                torch.cuda.synchronize()
            total += time.perf_counter() - t0
        totals.append(total)
    return statistics.median(totals)


def run_one(method: str, args: argparse.Namespace, root: Path) -> Dict[str, float]:
    from drift.trainer import DriftConfig, train
    from drift.trainer.io import read_json
    from drift.trainer.layout import RunLayout

    out = root / method
    cfg = DriftConfig(
        method=method, model_name_or_path=args.model, data=args.data, output_dir=str(out), iterations=1,
        eval_base=False, num_train_examples=args.num_train_examples, num_eval_examples=args.num_eval_examples,
        max_prompt_length=args.max_prompt_length, max_new_tokens=args.max_new_tokens,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        learning_rate=1e-5, warmup_ratio=0.0, save_steps=10_000,
    )
    with OalRecorder() as rec:
        t0 = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - t0
    run = RunLayout(out)
    it = read_json(run.eval_json(1))
    gen = torch.load(run.generations(1), weights_only=False)["seconds"]
    masks = torch.load(run.masks(1), weights_only=False)["seconds"]
    ref = torch.load(run.reference(1), weights_only=False)["seconds"]
    tr = read_json(run.train_info(1))["seconds"]
    iteration = gen + masks + ref + tr  # the self-play iteration proper (evaluation excluded)
    oal = replay_oal(rec.shapes, "cuda" if torch.cuda.is_available() else "cpu") if rec.shapes else 0.0
    return {"method": method, "wall_s": wall, "iteration_s": iteration, "generate_s": gen, "lcs_mask_s": masks,
            "reference_s": ref, "train_s": tr, "eval_s": it["seconds"], "oal_calls": len(rec.shapes), "oal_s": oal}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="drift bench iteration", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model dir (default: the demo's SmolLM2-135M-Instruct)")
    p.add_argument("--data", default="xsum", help="demo set name or data file (default: xsum)")
    p.add_argument("--num_train_examples", type=int, default=8)
    p.add_argument("--num_eval_examples", type=int, default=2)
    p.add_argument("--max_prompt_length", type=int, default=128)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1, help="runs per method, alternating order; medians reported")
    p.add_argument("--csv", default=None, help="append the results to this CSV (with commit, device, date)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    runs: Dict[str, List[Dict[str, float]]] = {"spin": [], "drift": []}
    for r in range(args.repeats):
        for m in (("spin", "drift") if r % 2 == 0 else ("drift", "spin")):
            with tempfile.TemporaryDirectory(prefix="drift-bench-iteration-") as tmp:
                runs[m].append(run_one(m, args, Path(tmp)))
    spin, drift_ = ({k: (statistics.median(x[k] for x in runs[m]) if k != "method" else m) for k in runs[m][0]}
                    for m in ("spin", "drift"))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"
    print(f"\none self-play iteration, {args.num_train_examples} pairs, {device}, median of {args.repeats}")
    print(f"{'stage':<12} {'spin (s)':>9} {'drift (s)':>9}")
    for k in ("generate_s", "lcs_mask_s", "reference_s", "train_s", "iteration_s"):
        print(f"{k[:-2]:<12} {spin[k]:>9.2f} {drift_[k]:>9.2f}")
    it = drift_["iteration_s"]
    share_lcs = drift_["lcs_mask_s"] / it
    share_oal = drift_["oal_s"] / it
    print(f"\nDRIFT - SPIN: {it - spin['iteration_s']:+.2f} s ({(it - spin['iteration_s']) / spin['iteration_s']:+.1%} of SPIN)"
          f"  [noisy: generation and training vary run to run]")
    print(f"share of DRIFT's iteration: LCS masking {share_lcs:.2%}, OAL fwd+bwd ({drift_['oal_calls']} calls) "
          f"{share_oal:.2%}, together {share_lcs + share_oal:.2%}  (target < 5%)")
    if args.csv:
        path = Path(args.csv)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["date", "commit", "device", "pairs", *[f"spin_{k}" for k in spin if k != "method"],
                            *[f"drift_{k}" for k in drift_ if k != "method"], "share_lcs", "share_oal"])
            w.writerow([dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), _commit(), device,
                        args.num_train_examples, *[v for k, v in spin.items() if k != "method"],
                        *[v for k, v in drift_.items() if k != "method"], share_lcs, share_oal])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
