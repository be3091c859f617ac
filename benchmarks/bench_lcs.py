"""Benchmark: ``drift.lcs_mask`` against the pure-Python DP, RapidFuzz and difflib.

Workload (DESIGN.md section 5): B pairs (default 1024) of token sequences, ``y`` of length L
drawn uniformly from a 150k vocabulary, ``y'`` made from ``y`` by random edits: each token
of ``y`` is kept (60%), substituted (20%) or deleted (20%), and after each position a random
token is inserted with probability 20% (so ``len(y') ~ L`` and ``LCS ~ 0.6 L``). ``y'`` is
right-padded to the batch's longest and its lengths are passed explicitly.

Rows (all produce per-pair difference masks of both sequences; throughput in pairs/s):

- ``drift-cpu-<n>t``: ``drift.lcs_mask`` on CPU int64 tensors with ``drift.set_num_threads(n)``.
- ``drift-cuda``: the same on CUDA tensors (only with a GPU and drift's CUDA kernels).
- ``python-dp``: ``drift.reference.lcs_mask_pair`` per pair, timed on a subsample; at
  lengths above ``--dp-max-length`` it is not run but extrapolated from the longest length
  that ran by the DP's L^2 cost (marked in the table).
- ``rapidfuzz``: a loop of ``rapidfuzz.distance.LCSseq.editops`` over pre-built Python
  lists, its ops turned into masks (deletes mark ``y``, inserts mark ``y'``; LCSseq edit
  scripts have no replacements).
- ``difflib``: ``difflib.SequenceMatcher(None, a, b).get_matching_blocks()`` -> masks. It
  is not an LCS algorithm: the script reports how many of its masks keep fewer tokens than
  the true LCS.

Slow baselines run on a subsample sized to about ``--budget`` seconds per call (shown as
the ``items`` column and a note); throughput is per pair, so ratios stay fair.

Correctness, checked every run (the script exits non-zero on a mismatch): drift's masks
equal the reference's on the DP subsample, drift's kept tokens form a common subsequence
of length ``lcs_length`` for every pair, RapidFuzz's kept-token count equals drift's
``lcs_length``, drift's 1-thread, n-thread and CUDA masks are identical.

Usage: ``python benchmarks/bench_lcs.py [--lengths 64 256 1024 4096] [--batch 1024]
[--repeats 5] [--quick]``; results are appended to ``benchmarks/results/bench_lcs.csv``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

import drift
from drift import reference

from _harness import Bench, Measurement, environment_line

TARGETS = (  # (baseline, L or None for every length, minimum speed-up of drift-cpu-2t)
    ("python-dp", None, 100.0),
    ("rapidfuzz", 256, 5.0),
    ("rapidfuzz", 1024, 10.0),
)


# --------------------------------------------------------------------------- workload
@dataclass
class Pairs:
    """One batch: padded int64 tensors with lengths, and the same pairs as Python lists."""

    y: torch.Tensor  # (B, L)
    y_prime: torch.Tensor  # (B, N), right-padded with 0
    y_lengths: torch.Tensor  # (B,)
    y_prime_lengths: torch.Tensor  # (B,)
    a: List[List[int]]
    b: List[List[int]]


def make_pairs(batch: int, length: int, vocab: int, seed: int) -> Pairs:
    """``batch`` pairs (y, y') of length ``length`` from ``vocab`` tokens (module docstring)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, vocab, size=(batch, length), dtype=np.int64)
    rows = []
    for k in range(batch):
        r = rng.random(length)
        main = np.where(r < 0.6, y[k], rng.integers(0, vocab, size=length))
        main[r >= 0.8] = -1  # deleted
        ins = np.where(rng.random(length) < 0.2, rng.integers(0, vocab, size=length), -1)
        seq = np.stack([main, ins], axis=1).reshape(-1)
        rows.append(seq[seq >= 0])
    ypl = np.array([len(s) for s in rows], dtype=np.int64)
    yp = np.zeros((batch, max(1, int(ypl.max()))), dtype=np.int64)
    for k, s in enumerate(rows):
        yp[k, : len(s)] = s
    return Pairs(
        y=torch.from_numpy(y),
        y_prime=torch.from_numpy(yp),
        y_lengths=torch.full((batch,), length, dtype=torch.int64),
        y_prime_lengths=torch.from_numpy(ypl),
        a=[row.tolist() for row in y],
        b=[s.tolist() for s in rows],
    )


# --------------------------------------------------------------------------- implementations
def drift_call(p: Pairs, device: str) -> Callable[[], drift.LcsMasks]:
    y, yp = p.y.to(device), p.y_prime.to(device)
    yl, ypl = p.y_lengths.to(device), p.y_prime_lengths.to(device)
    return lambda: drift.lcs_mask(y, yp, yl, ypl)


def python_dp(a: Sequence[List[int]], b: Sequence[List[int]]):
    return [reference.lcs_mask_pair(x, z) for x, z in zip(a, b)]


def rapidfuzz_masks(a: Sequence[List[int]], b: Sequence[List[int]], width_a: int, width_b: int):
    """Masks from RapidFuzz's LCSseq edit script: (k, width_a) and (k, width_b) bool, kept counts."""
    from rapidfuzz.distance import LCSseq

    editops = LCSseq.editops
    mask_a = np.zeros((len(a), width_a), dtype=bool)
    mask_b = np.zeros((len(b), width_b), dtype=bool)
    for k, (x, z) in enumerate(zip(a, b)):
        ops = editops(x, z).as_list()
        mask_a[k, [s for tag, s, _ in ops if tag != "insert"]] = True
        mask_b[k, [d for tag, _, d in ops if tag != "delete"]] = True
    return mask_a, mask_b


def difflib_masks(a: Sequence[List[int]], b: Sequence[List[int]], width_a: int, width_b: int):
    """Masks from difflib's matching blocks, and the matched-token count of each pair."""
    mask_a = np.ones((len(a), width_a), dtype=bool)
    mask_b = np.ones((len(b), width_b), dtype=bool)
    matched = np.zeros(len(a), dtype=np.int64)
    for k, (x, z) in enumerate(zip(a, b)):
        mask_a[k, len(x):] = False
        mask_b[k, len(z):] = False
        for i, j, n in difflib.SequenceMatcher(None, x, z).get_matching_blocks():
            mask_a[k, i : i + n] = False
            mask_b[k, j : j + n] = False
            matched[k] += n
    return mask_a, mask_b, matched


def subsample_size(call: Callable[[], object], pairs: int, budget_s: float, batch: int, minimum: int) -> int:
    """Pairs to time so that one call takes about ``budget_s``, from one timed call on ``pairs`` pairs."""
    t0 = time.perf_counter()
    call()
    per_pair = max(time.perf_counter() - t0, 1e-7) / pairs
    return int(min(batch, max(minimum, budget_s // per_pair)))


# --------------------------------------------------------------------------- verification
class Checks:
    def __init__(self) -> None:
        self.failures: List[str] = []
        self.lines: List[str] = []

    def expect(self, ok: bool, what: str) -> None:
        (self.lines if ok else self.failures).append(("ok   " if ok else "FAIL ") + what)


def check_common_subsequence(out: drift.LcsMasks, p: Pairs) -> bool:
    my, myp, lens = out.y.cpu().numpy(), out.y_prime.cpu().numpy(), out.lcs_length.cpu().numpy()
    y, yp = p.y.numpy(), p.y_prime.numpy()
    for k in range(len(p.a)):
        la, lb = len(p.a[k]), len(p.b[k])
        if my[k, la:].any() or myp[k, lb:].any():
            return False
        kept_a, kept_b = y[k, :la][~my[k, :la]], yp[k, :lb][~myp[k, :lb]]
        if len(kept_a) != lens[k] or not np.array_equal(kept_a, kept_b):
            return False
    return True


# --------------------------------------------------------------------------- the run
def bench_length(bench: Bench, checks: Checks, args, L: int, cuda: bool, dp_fit: dict) -> None:
    B = args.batch
    print(f"L={L}: generating {B} pairs ...", flush=True)
    p = make_pairs(B, L, args.vocab, args.seed + L)
    params = {"B": B, "L": L}
    width_a, width_b = p.y.shape[1], p.y_prime.shape[1]
    kw = dict(params=params, warmup=args.warmup, repeats=args.repeats)

    outs = {}
    for n in args.threads:
        drift.set_num_threads(n)
        bench.run(f"drift-cpu-{n}t", lambda: drift_call(p, "cpu"), items=B, **kw)
        outs[n] = drift_call(p, "cpu")()
    drift.set_num_threads(0)
    ref_out = outs[args.threads[-1]]
    for n in args.threads[:-1]:
        checks.expect(all(torch.equal(getattr(outs[n], f), getattr(ref_out, f)) for f in ref_out._fields),
                      f"L={L}: drift {n}-thread masks == {args.threads[-1]}-thread masks")
    checks.expect(check_common_subsequence(ref_out, p),
                  f"L={L}: drift kept tokens form a common subsequence of length lcs_length (all {B} pairs)")
    lcs_len = ref_out.lcs_length.numpy()

    if cuda and L <= drift._C.lcs_cuda_max_length():
        bench.run("drift-cuda", lambda: drift_call(p, "cuda"), items=B, device="cuda", **kw)
        gpu = drift_call(p, "cuda")()
        checks.expect(all(torch.equal(getattr(gpu, f).cpu(), getattr(ref_out, f)) for f in ref_out._fields),
                      f"L={L}: drift CUDA masks == CPU masks")

    slow_kw = dict(params=params, warmup=min(args.warmup, 1), repeats=max(1, min(args.repeats, args.slow_repeats)))
    # Pure-Python DP on a subsample; extrapolated (L^2) above --dp-max-length.
    if L <= args.dp_max_length:
        k = subsample_size(lambda: python_dp(p.a[:1], p.b[:1]), 1, args.budget, B, args.min_pairs)
        bench.run("python-dp", lambda: (lambda: python_dp(p.a[:k], p.b[:k])), items=k,
                  note=f"{k}-pair subsample", **slow_kw)
        ref = python_dp(p.a[:k], p.b[:k])
        my, myp = ref_out.y.numpy(), ref_out.y_prime.numpy()
        same = all(
            my[i, : len(p.a[i])].tolist() == da and myp[i, : len(p.b[i])].tolist() == db and lcs_len[i] == n
            for i, (da, db, n) in enumerate(ref)
        )
        checks.expect(same, f"L={L}: drift masks == drift.reference.lcs_mask_pair on {k} pairs")
        dp_fit["L"], dp_fit["per_pair"] = L, bench.find("python-dp", params).p50 / k
    elif dp_fit:
        per_pair = dp_fit["per_pair"] * (L / dp_fit["L"]) ** 2
        bench.add(Measurement(case="python-dp", params=params, device="cpu", items=1, repeats=0,
                              p20=per_pair, p50=per_pair, p80=per_pair, mem_method="n/a",
                              note=f"not run: extrapolated from L={dp_fit['L']} by (L/{dp_fit['L']})^2"))

    # RapidFuzz loop (full batch unless a call would exceed the budget).
    k = subsample_size(lambda: rapidfuzz_masks(p.a[:8], p.b[:8], width_a, width_b), 8, args.rf_budget, B,
                       args.min_pairs)
    bench.run("rapidfuzz", lambda: (lambda: rapidfuzz_masks(p.a[:k], p.b[:k], width_a, width_b)), items=k,
              note="" if k == B else f"{k}-pair subsample", **slow_kw)
    ma, _ = rapidfuzz_masks(p.a[:k], p.b[:k], width_a, width_b)
    kept = np.array([len(p.a[i]) - int(ma[i].sum()) for i in range(k)])
    checks.expect(bool(np.array_equal(kept, lcs_len[:k])),
                  f"L={L}: rapidfuzz kept-token count == drift lcs_length on {k} pairs")

    # difflib (not an LCS: count its shortfalls).
    k = subsample_size(lambda: difflib_masks(p.a[:1], p.b[:1], width_a, width_b), 1, args.budget, B, args.min_pairs)
    bench.run("difflib", lambda: (lambda: difflib_masks(p.a[:k], p.b[:k], width_a, width_b)), items=k,
              note="" if k == B else f"{k}-pair subsample", **slow_kw)
    _, _, matched = difflib_masks(p.a[:k], p.b[:k], width_a, width_b)
    short = int((matched < lcs_len[:k]).sum())
    checks.expect(bool((matched <= lcs_len[:k]).all()), f"L={L}: difflib never keeps more than the LCS ({k} pairs)")
    checks.lines.append(f"info L={L}: difflib masks that are NOT a longest common subsequence: {short}/{k} "
                        f"(mean kept {matched.mean():.1f} vs LCS {lcs_len[:k].mean():.1f})")


def bench_cuda_case(bench: Bench, checks: Checks, args) -> None:
    B, L = args.cuda_batch, args.cuda_length
    p = make_pairs(B, L, args.vocab, args.seed + 7 * L)
    params = {"B": B, "L": L}
    kw = dict(params=params, warmup=args.warmup, repeats=args.repeats)
    threads = args.threads[-1]
    drift.set_num_threads(threads)
    bench.run(f"drift-cpu-{threads}t", lambda: drift_call(p, "cpu"), items=B, **kw)
    cpu = drift_call(p, "cpu")()
    drift.set_num_threads(0)
    bench.run("drift-cuda", lambda: drift_call(p, "cuda"), items=B, device="cuda", **kw)
    gpu = drift_call(p, "cuda")()
    checks.expect(all(torch.equal(getattr(gpu, f).cpu(), getattr(cpu, f)) for f in cpu._fields),
                  f"B={B} L={L}: drift CUDA masks == CPU masks")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # None = not given: --quick then picks its own value, otherwise the full-run default.
    full = dict(lengths=[64, 256, 1024, 4096], batch=1024, repeats=7, slow_repeats=5, warmup=2, budget=1.0,
                rf_budget=3.0, cuda_batch=4096)
    quick = dict(lengths=[64, 256], batch=256, repeats=3, slow_repeats=2, warmup=1, budget=0.2, rf_budget=0.5,
                 cuda_batch=1024)
    ap.add_argument("--lengths", type=int, nargs="+", help=f"sequence lengths L (default {full['lengths']})")
    ap.add_argument("--batch", type=int, help=f"pairs per batch B (default {full['batch']})")
    ap.add_argument("--repeats", type=int, help=f"timed repeats for drift rows, median reported (default {full['repeats']})")
    ap.add_argument("--slow-repeats", type=int, help=f"timed repeats for the slow baselines (default {full['slow_repeats']})")
    ap.add_argument("--warmup", type=int, help=f"untimed calls before timing (default {full['warmup']})")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="drift CPU thread counts (last = the one compared)")
    ap.add_argument("--vocab", type=int, default=150_000, help="vocabulary size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, help=f"seconds per call for python-dp/difflib subsamples (default {full['budget']})")
    ap.add_argument("--rf-budget", type=float, help=f"seconds per call for the rapidfuzz loop (default {full['rf_budget']})")
    ap.add_argument("--min-pairs", type=int, default=2, help="smallest subsample for slow baselines")
    ap.add_argument("--dp-max-length", type=int, default=1024, help="above this L the DP is extrapolated, not run")
    ap.add_argument("--cuda-batch", type=int, help=f"B of the extra CUDA-vs-CPU case (default {full['cuda_batch']})")
    ap.add_argument("--cuda-length", type=int, default=512, help="L of the extra CUDA-vs-CPU case")
    ap.add_argument("--quick", action="store_true",
                    help="a fast smoke run (L 64 256, B 256, fewer repeats); explicit options still win")
    ap.add_argument("--no-csv", action="store_true", help="do not append to benchmarks/results/bench_lcs.csv")
    args = ap.parse_args(argv)
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch", "repeats", "slow_repeats", "min_pairs", "vocab"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: expected >= 1")
    if args.warmup < 0 or args.budget <= 0 or args.rf_budget <= 0:
        ap.error("--warmup/--budget/--rf-budget: expected >= 0 / > 0 / > 0")
    if any(L < 1 for L in args.lengths) or any(t < 1 for t in args.threads) or args.cuda_batch < 1:
        ap.error("--lengths/--threads: expected positive integers")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and drift.cuda_available()
    print(environment_line(["cpu", "cuda"] if cuda else ["cpu"]))
    print(f"drift build: {drift.build_info()}; torch threads {torch.get_num_threads()}")
    bench, checks, dp_fit = Bench("bench_lcs"), Checks(), {}
    for L in sorted(args.lengths):
        bench_length(bench, checks, args, L, cuda, dp_fit)
    if cuda:
        bench_cuda_case(bench, checks, args)
    else:
        print(f"(no CUDA GPU or drift built without CUDA: the B={args.cuda_batch} L={args.cuda_length} "
              "CUDA-vs-CPU case is skipped)")

    main_case = f"drift-cpu-{args.threads[-1]}t"
    print()
    baselines = ["python-dp", "rapidfuzz", "difflib"] + [f"drift-cpu-{n}t" for n in dict.fromkeys(args.threads)]
    bench.print_table(baselines=baselines, unit="pairs")
    print()
    for line in checks.lines + checks.failures:
        print(line)
    print()
    print(f"targets ({main_case}, medians):")
    for baseline, L_target, need in TARGETS:
        for L in sorted(args.lengths):
            if L_target is not None and L != L_target:
                continue
            r = bench.ratio(main_case, baseline, {"B": args.batch, "L": L})
            if r is not None:
                print(f"  vs {baseline:<10} L={L:<5} {r:9.1f}x  (target >= {need:g}x)  {'PASS' if r >= need else 'MISS'}")
    if cuda:
        r = bench.ratio("drift-cuda", main_case, {"B": args.cuda_batch, "L": args.cuda_length})
        print(f"  drift-cuda vs {main_case} at B={args.cuda_batch} L={args.cuda_length}: {r:.1f}x")
    if not args.no_csv:
        print(f"appended {len(bench.rows)} rows to {bench.write_csv()}")
    if checks.failures:
        print(f"{len(checks.failures)} correctness check(s) FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
