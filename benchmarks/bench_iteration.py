"""One self-play iteration, SPIN vs DRIFT, on the same model and data: what do DAM + OAL cost?

Runs ``drift.trainer.train`` twice (method spin, method drift; 1 iteration, no evaluation) and
reports each stage's wall time, the DRIFT - SPIN difference, and the share of DRIFT's
iteration spent in LCS masking (the masks stage) and in the occurrence-aware loss (its
forward + backward, replayed on the logits shapes the training steps used). DESIGN.md
section 5 asks for LCS masking + OAL < 5% of the iteration.

    drift bench iteration                    # SmolLM2-135M on XSum (CPU: a few minutes)
    drift bench iteration --num_train_examples 16 --repeats 3

The table is the benchmark harness's (``_harness.Bench``): one block per stage, p20/p50/p80 over
the repeats, ``x spin`` = SPIN's time over DRIFT's (> 1: DRIFT faster); rows are appended to
``benchmarks/results/bench_iteration.csv`` unless ``--no-csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List

import torch

from _harness import Bench, Measurement, environment_line, percentile

#: The stages of one self-play iteration (``iteration``: their sum, evaluation excluded).
STAGES = ("generate", "lcs_mask", "reference", "train", "iteration")


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


def replay_oal(shapes, device: str) -> Callable[[], Callable[[], None]]:
    """Harness setup: oal_loss forward + backward once per recorded call (inputs built once per distinct shape)."""
    import drift

    cases = []
    for ((b, t, v), dtype, (tb, tm)), count in Counter(shapes).items():
        logits = torch.randn(b, t, v, dtype=dtype, device=device, requires_grad=True)
        targets = torch.randint(0, v, (tb, tm), device=device)
        cases.append((logits, targets, torch.ones(b, t, dtype=torch.bool, device=device), count))

    def call() -> None:
        for logits, targets, mask, count in cases:
            for _ in range(count):
                logits.grad = None
                drift.oal_loss(logits, targets, logits_mask=mask).backward()

    return lambda: call


def run_one(method: str, args: argparse.Namespace, root: Path) -> Dict[str, float]:
    from drift.trainer import DriftConfig, train
    from drift.atomic import read_json
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
    return {"wall": wall, "iteration": iteration, "generate": gen, "lcs_mask": masks, "reference": ref, "train": tr,
            "eval": it["seconds"], "oal_shapes": rec.shapes}


def add_stages(bench: Bench, method: str, runs: List[Dict], pairs: int, device: str) -> None:
    """One row per stage: p20/p50/p80 of its seconds over the runs (items: the training pairs)."""
    for stage in STAGES:
        samples = [r[stage] for r in runs]
        bench.add(Measurement(case=method, params={"pairs": pairs, "stage": stage}, device=device, items=pairs,
                              repeats=len(samples), p20=percentile(samples, 20), p50=percentile(samples, 50),
                              p80=percentile(samples, 80), mem_method="off"))


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
    p.add_argument("--no-csv", action="store_true", help="do not append to benchmarks/results/bench_iteration.csv")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(environment_line([device]), flush=True)

    runs: Dict[str, List[Dict]] = {"spin": [], "drift": []}
    for r in range(args.repeats):
        for m in (("spin", "drift") if r % 2 == 0 else ("drift", "spin")):
            with tempfile.TemporaryDirectory(prefix="drift-bench-iteration-") as tmp:
                runs[m].append(run_one(m, args, Path(tmp)))
    pairs = args.num_train_examples
    bench = Bench("bench_iteration")
    for m in ("spin", "drift"):
        add_stages(bench, m, runs[m], pairs, device)
    shapes = runs["drift"][0]["oal_shapes"]
    if shapes:
        bench.run("drift", replay_oal(shapes, device), params={"pairs": pairs, "stage": "oal fwd+bwd"}, items=pairs,
                  device=device, warmup=0, repeats=3, memory=False, note="oal_loss replayed on the recorded shapes")
    print(f"\none self-play iteration, {pairs} pairs, {device}, median of {args.repeats}")
    bench.print_table(baselines=["spin"], unit="pairs")
    spin, drift_ = (bench.find(m, {"pairs": pairs, "stage": "iteration"}).p50 for m in ("spin", "drift"))
    oal = bench.find("drift", {"pairs": pairs, "stage": "oal fwd+bwd"}) if shapes else None
    share_lcs = bench.find("drift", {"pairs": pairs, "stage": "lcs_mask"}).p50 / drift_
    share_oal = (oal.p50 if oal else 0.0) / drift_
    print(f"\nDRIFT - SPIN: {drift_ - spin:+.2f} s ({(drift_ - spin) / spin:+.1%} of SPIN)"
          f"  [noisy: generation and training vary run to run]")
    print(f"share of DRIFT's iteration: LCS masking {share_lcs:.2%}, OAL fwd+bwd ({len(shapes)} calls) "
          f"{share_oal:.2%}, together {share_lcs + share_oal:.2%}  (target < 5%)")
    if not args.no_csv:
        print(f"appended {len(bench.rows)} rows to {bench.write_csv()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
