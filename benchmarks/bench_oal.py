"""Benchmark: ``drift.oal_loss`` forward+backward against naive eager PyTorch.

Workload: logits (B, T, V) over the generated response (every position valid) and, per row,
M distinct ground-truth target ids; the loss is reduced with "mean" and back-propagated.
Defaults: CPU B=2, T=256, V=49152 (SmolLM2's vocabulary), fp32, M=64; ``--device cuda``:
B=4, T=512, V=151936 (Qwen2.5's), bf16 (DESIGN.md section 5).

Rows (each call = forward + backward into a leaf tensor of the logits):

- ``drift``: :func:`drift.oal_loss` (fused; the (B, T, V) gradient is its only big tensor).
- ``eager-gather``: ``log_softmax`` of the whole (B, T, V), gather the target columns, max over
  positions (the natural eager implementation; autograd keeps the log-softmax).
- ``eager-naive``: METHOD.md's formula literally: ``softmax`` (B, T, V), ``p_max`` = max over
  positions for every vocabulary id (B, V), ``-log`` of the targets' entries.

Also printed: the bandwidth floor (bytes of logits read twice + gradient written, over the
copy bandwidth measured in the same run) and drift's time over it. Values and gradients of
the three rows are checked against each other every run (exit status 1 on a mismatch).

Peak memory: the harness' ``hwm`` method on CPU (RSS high-water mark growth during one call,
after ``malloc_trim``; see ``benchmarks/_harness.py``), ``torch.cuda.max_memory_allocated``
growth on CUDA. The logits themselves are allocated before and not counted.

Usage: ``python benchmarks/bench_oal.py [--device cpu|cuda] [--batch B] [--seq T] [--vocab V]
[--targets M] [--dtype float32|bfloat16|float16] [--repeats N] [--no-csv]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

import torch

import drift

from _harness import Bench
from _vocab_case import DTYPES, parse_vocab_args, print_floor_and_memory, start



def eager_gather(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    batch, seq, _ = logits.shape
    logp = logits.float().log_softmax(dim=-1)
    columns = logp.gather(2, targets[:, None, :].expand(batch, seq, targets.shape[1]))
    return -columns.max(dim=1).values.sum(dim=1).mean()


def eager_naive(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    p_max = logits.float().softmax(dim=-1).max(dim=1).values  # (B, V)
    return -p_max.gather(1, targets).log().sum(dim=1).mean()


def make_inputs(args: argparse.Namespace):
    g = torch.Generator().manual_seed(args.seed)
    logits = (torch.randn(args.batch, args.seq, args.vocab, generator=g) * 2).to(DTYPES[args.dtype])
    targets = torch.stack([torch.randperm(args.vocab, generator=g)[: args.targets] for _ in range(args.batch)])
    return logits.to(args.device), targets.to(args.device)


def fwd_bwd(loss_fn: Callable, logits: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    leaf = logits.detach().requires_grad_(True)

    def call() -> None:
        leaf.grad = None
        loss_fn(leaf, targets).backward()
        leaf.grad = None

    return call


def check(logits: torch.Tensor, targets: torch.Tensor, tol: float) -> bool:
    results = []
    for fn in (drift.oal_loss, eager_gather, eager_naive):
        leaf = logits.detach().requires_grad_(True)
        loss = fn(leaf, targets)
        loss.backward()
        results.append((loss.detach().double(), leaf.grad.double()))
    ok = True
    for name, (loss, grad) in zip(("eager-gather", "eager-naive"), results[1:]):
        if not torch.allclose(results[0][0], loss, rtol=tol, atol=tol) or not torch.allclose(
            results[0][1], grad, rtol=tol, atol=tol
        ):
            print(f"MISMATCH: drift vs {name}: loss {results[0][0].item()} vs {loss.item()}, "
                  f"max grad diff {(results[0][1] - grad).abs().max().item():.3g}", file=sys.stderr)
            ok = False
    return ok


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return parse_vocab_args(
        __doc__.split("\n\n")[0], "bench_oal", argv,
        lambda ap: ap.add_argument("--targets", type=int, default=64, help="M distinct target ids per row"),
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not start(args):
        return 2
    logits, targets = make_inputs(args)
    ok = check(logits, targets, 1e-4 if args.dtype == "float32" else 2e-2)
    params = {"B": args.batch, "T": args.seq, "V": args.vocab, "M": args.targets, "dtype": args.dtype}
    bench = Bench("bench_oal")
    for case, fn in (("drift", drift.oal_loss), ("eager-gather", eager_gather), ("eager-naive", eager_naive)):
        bench.run(case, lambda fn=fn: fwd_bwd(fn, logits, targets), params=params, items=args.batch * args.seq,
                  device=args.device, warmup=args.warmup, repeats=args.repeats)
    print()
    bench.print_table(baselines=["eager-gather", "eager-naive"], unit="rows")
    print_floor_and_memory(bench, params, ["eager-gather", "eager-naive"], logits, args.device)
    if not args.no_csv:
        print(f"appended {len(bench.rows)} rows to {bench.write_csv()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
