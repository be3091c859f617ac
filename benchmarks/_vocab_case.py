"""What the fused vocabulary-loss benchmarks (bench_oal.py, bench_token_logps.py) share:
the (B, T, V) case's command line with per-device defaults (DESIGN.md section 5), the
bandwidth floor, and the floor / peak-memory summary printed under the table."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

import torch

import drift
from _harness import Bench, environment_line, percentile, time_call

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_vocab_args(
    description: str,
    csv_name: str,
    argv: Optional[Sequence[str]] = None,
    add_extra: Optional[Callable[[argparse.ArgumentParser], None]] = None,
) -> argparse.Namespace:
    """Parses --device/--batch/--seq/--vocab/--dtype/--repeats/--warmup/--seed/--no-csv.

    Unset sizes take the design's CPU case (B=2, T=256, V=49152, fp32) or GPU case
    (B=4, T=512, V=151936, bf16) by ``--device``.
    """
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=None, help="B (default 2 on CPU, 4 on CUDA)")
    ap.add_argument("--seq", type=int, default=None, help="T (default 256 on CPU, 512 on CUDA)")
    ap.add_argument("--vocab", type=int, default=None, help="V (default 49152 on CPU, 151936 on CUDA)")
    if add_extra is not None:
        add_extra(ap)
    ap.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-csv", action="store_true", help=f"do not append to benchmarks/results/{csv_name}.csv")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    args.batch = args.batch or (4 if cuda else 2)
    args.seq = args.seq or (512 if cuda else 256)
    args.vocab = args.vocab or (151936 if cuda else 49152)
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    return args


def start(args: argparse.Namespace) -> bool:
    """Print the environment lines; False (with a message on stderr) when ``--device cuda`` cannot run."""
    if args.device == "cuda" and not drift.cuda_available():
        print("--device cuda: no CUDA GPU or drift was built without CUDA kernels", file=sys.stderr)
        return False
    print(environment_line([args.device]))
    print(f"drift CPU threads: {drift.get_num_threads()}, torch threads: {torch.get_num_threads()}")
    return True


def bandwidth_floor(logits: torch.Tensor, device: str) -> float:
    """Seconds to read the logits twice and write a gradient of their size at copy speed."""
    dst = torch.empty_like(logits)
    p50 = percentile(time_call(lambda: dst.copy_(logits), device=device, warmup=2, repeats=7), 50)
    copy_bw = 2 * logits.numel() * logits.element_size() / p50  # bytes read + written per second
    return 3 * logits.numel() * logits.element_size() / copy_bw


def print_floor_and_memory(bench: Bench, params: dict, baselines: Sequence[str], logits: torch.Tensor, device: str) -> None:
    """drift's p50 against the bandwidth floor, and each baseline's peak memory over drift's."""
    floor = bandwidth_floor(logits, device)
    ours = bench.find("drift", params)
    print(f"\nbandwidth floor (read logits twice + write the gradient at copy speed): {floor * 1e3:.2f} ms; "
          f"drift fwd+bwd = {ours.p50 / floor:.2f}x the floor")
    for base in baselines:
        other = bench.find(base, params)
        if ours.peak_mem_bytes and other.peak_mem_bytes:
            print(f"peak memory: {base} / drift = {other.peak_mem_bytes / ours.peak_mem_bytes:.2f}x "
                  f"({ours.mem_method})")
