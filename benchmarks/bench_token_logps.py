"""Benchmark: ``drift.token_logps`` forward+backward against eager PyTorch (and TRL).

Workload: logits (B, T, V) and labels (B, T), every position valid; the per-token log-probs
are summed and back-propagated. Defaults: CPU B=2, T=256, V=49152, fp32; ``--device cuda``:
B=4, T=512, V=151936, bf16 (DESIGN.md section 5).

Rows (each call = forward + backward into a leaf tensor of the logits):

- ``drift``: :func:`drift.token_logps` (fused online log-sum-exp; backward writes
  ``g * (onehot - softmax)`` directly: the gradient is its only (B, T, V) tensor).
- ``eager``: ``log_softmax`` of the whole (B, T, V) in fp32, then ``gather``.
- ``trl``: ``trl.trainer.utils.selective_log_softmax`` when TRL is importable (it is not a
  dependency: the row is skipped with a note otherwise).

Also printed: the bandwidth floor (logits read twice + gradient written, at the copy speed
measured in the same run). Values and gradients are cross-checked every run (exit status 1
on a mismatch). Peak memory: see ``benchmarks/bench_oal.py`` (harness ``hwm`` on CPU).

Usage: ``python benchmarks/bench_token_logps.py [--device cpu|cuda] [--batch B] [--seq T]
[--vocab V] [--dtype float32|bfloat16|float16] [--repeats N] [--no-csv]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Callable, Optional, Sequence

import torch

import drift

from _harness import Bench
from _vocab_case import DTYPES, parse_vocab_args, print_floor_and_memory, start



def eager(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.float().log_softmax(dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def trl_selective_log_softmax() -> Optional[Callable]:
    if importlib.util.find_spec("trl") is None:
        return None
    try:
        from trl.trainer.utils import selective_log_softmax
    except ImportError:
        return None
    return selective_log_softmax


def fwd_bwd(fn: Callable, logits: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    leaf = logits.detach().requires_grad_(True)

    def call() -> None:
        leaf.grad = None
        fn(leaf, labels).sum().backward()
        leaf.grad = None

    return call


def check(cases, logits: torch.Tensor, labels: torch.Tensor, tol: float) -> bool:
    results = {}
    for name, fn in cases:
        leaf = logits.detach().requires_grad_(True)
        out = fn(leaf, labels)
        out.sum().backward()
        results[name] = (out.detach().double(), leaf.grad.double())
    ok = True
    ref_out, ref_grad = results["drift"]
    for name, (out, grad) in results.items():
        if not torch.allclose(ref_out, out, rtol=tol, atol=tol) or not torch.allclose(ref_grad, grad, rtol=tol, atol=tol):
            print(f"MISMATCH: drift vs {name}: max value diff {(ref_out - out).abs().max().item():.3g}, "
                  f"max grad diff {(ref_grad - grad).abs().max().item():.3g}", file=sys.stderr)
            ok = False
    return ok


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return parse_vocab_args(__doc__.split("\n\n")[0], "bench_token_logps", argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not start(args):
        return 2
    g = torch.Generator().manual_seed(args.seed)
    logits = (torch.randn(args.batch, args.seq, args.vocab, generator=g) * 2).to(DTYPES[args.dtype]).to(args.device)
    labels = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).to(args.device)
    cases = [("drift", drift.token_logps), ("eager", eager)]
    trl = trl_selective_log_softmax()
    if trl is not None:
        cases.append(("trl", trl))
    else:
        print("trl: not importable, its row is skipped")
    ok = check(cases, logits, labels, 1e-4 if args.dtype == "float32" else 2e-2)
    params = {"B": args.batch, "T": args.seq, "V": args.vocab, "dtype": args.dtype}
    bench = Bench("bench_token_logps")
    for case, fn in cases:
        bench.run(case, lambda fn=fn: fwd_bwd(fn, logits, labels), params=params, items=args.batch * args.seq,
                  device=args.device, warmup=args.warmup, repeats=args.repeats)
    print()
    bench.print_table(baselines=[c for c, _ in cases if c != "drift"], unit="tokens")
    print_floor_and_memory(bench, params, [c for c, _ in cases[1:]], logits, args.device)
    if not args.no_csv:
        print(f"appended {len(bench.rows)} rows to {bench.write_csv()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
