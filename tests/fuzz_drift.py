"""Seeded fuzzing of every public entry point of drift and of the ``torch.ops.drift`` ops.

Each case is built from ``(seed, index)`` alone, so any case replays by itself:

    PYTHONPATH=python python tests/fuzz_drift.py --seed 0 --start 1234 --stop 1235 -v

A case is either valid (the result is checked against :mod:`drift.reference` or a float64
computation) or bad (it must raise TypeError/ValueError whose message starts with the name of
the argument at fault, DESIGN.md section 6). Anything else is a failure: another exception
type, a wrong result, an unnamed argument. A crash or hang is caught by the caller
(tests/test_fuzz.py), which runs this file in subprocesses; the line ``CASE <i>`` printed
before every case names the one that was running.

Output: ``CASE i`` per case, ``FAIL i <entry> <detail>`` per failure, and a last line
``SUMMARY {json}`` with the counts per entry point and outcome.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import traceback
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

import drift
from drift import reference

LOGITS_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
ID_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]


class Bad(Exception):
    """The result of a valid case disagreed with the reference."""


class Case:
    """One generated call: ``run()`` performs and checks it; ``names`` are the argument names a
    bad case's error may start with (empty for a valid case)."""

    def __init__(self, entry: str, run: Callable[[], None], names: Tuple[str, ...] = ()) -> None:
        self.entry, self.run, self.names = entry, run, names


# ---- helpers ------------------------------------------------------------------------------


def close(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float, what: str) -> None:
    got, want = torch.as_tensor(got).detach().double(), torch.as_tensor(want).detach().double()
    atol = atol if math.isfinite(atol) else 1e-6  # a NaN reference value scales no tolerance
    if got.shape != want.shape:
        raise Bad(f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    ok = torch.isclose(got, want, atol=atol, rtol=rtol, equal_nan=True)
    if not bool(ok.all()):
        bad = (~ok).nonzero()[0].tolist() if got.dim() else []
        raise Bad(f"{what}: at {bad} got {got[tuple(bad)].item()} want {want[tuple(bad)].item()} (atol {atol}), "
                  f"{int((~ok).sum())} element(s) off")


def logits_tol(dtype: torch.dtype, x: torch.Tensor) -> float:
    """Absolute tolerance of an fp32 (fp64) computation on logits of magnitude up to |x|."""
    x = x.detach()
    finite = x[torch.isfinite(x)]
    scale = 1.0 + (float(finite.abs().max()) if finite.numel() else 0.0)
    return (1e-9 if dtype == torch.float64 else 3e-6) * scale * 4


def grad_tol(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-9, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]


def rand_logits(rng: random.Random, shape: Tuple[int, int, int], dtype: torch.dtype, special: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    scale = rng.choice([0.1, 1.0, 5.0, 30.0]) if dtype != torch.float16 else rng.choice([0.1, 1.0, 5.0])
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    if special and x.numel():
        flat = x.view(-1)
        for _ in range(rng.randint(1, 3)):
            flat[rng.randrange(flat.numel())] = rng.choice([float("-inf"), float("nan"), float("inf")])
    return x


def maybe_strided(rng: random.Random, x: torch.Tensor) -> torch.Tensor:
    """``x`` itself, or an equal non-contiguous view of it (padded rows, a transposed copy)."""
    r = rng.random()
    if r < 0.15 and x.dim() == 3:  # rows strided apart: a slice of a wider tensor
        wide = torch.zeros(x.shape[0], x.shape[1] + 2, x.shape[2], dtype=x.dtype)
        wide[:, 1:-1] = x
        return wide[:, 1:-1]
    if r < 0.25 and x.dim() == 3:  # the vocabulary dimension not unit-stride
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if r < 0.32 and x.dim() == 2 and x.shape[1] > 0:
        wide = torch.zeros(x.shape[0], x.shape[1] * 2, dtype=x.dtype)
        wide[:, ::2] = x
        return wide[:, ::2]
    return x


def rand_bool(rng: random.Random, shape: Tuple[int, ...], p: Optional[float] = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    p = rng.choice([0.0, 0.3, 0.7, 1.0]) if p is None else p
    return torch.rand(shape, generator=g) < p


def id_dtype(rng: random.Random, vocab: int) -> torch.dtype:
    """An id dtype that holds every id below ``vocab`` (uint8 up to 256: ids past 127, 156 = -100
    wrapped among them, must be read as numbers)."""
    return rng.choice([d for d in ID_DTYPES if torch.iinfo(d).max >= vocab - 1])


def rand_ids(rng: random.Random, shape: Tuple[int, ...], vocab: int, dtype=torch.int64) -> torch.Tensor:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    ids = torch.randint(0, vocab, shape, generator=g)
    wrapped = -100 % (torch.iinfo(dtype).max + 1)  # the ignore index cast to an unsigned dtype: an id
    if not dtype.is_signed and wrapped < vocab and ids.numel() and rng.random() < 0.5:
        ids.view(-1)[rng.randrange(ids.numel())] = wrapped
    return ids.to(dtype)


def with_threads(rng: random.Random, fn: Callable[[], Any]) -> Any:
    """Runs fn under a random drift thread count (1, 2, 3, 7 or all), then restores it."""
    n = rng.choice([0, 1, 2, 3, 7])
    drift.set_num_threads(n)
    try:
        return fn()
    finally:
        drift.set_num_threads(0)


# ---- lcs_mask -----------------------------------------------------------------------------

LCS_NAMES = ("y", "y_prime", "y_lengths", "y_prime_lengths", "pad_id", "y[", "y_prime[")


def lcs_rows(rng: random.Random, batch: int, max_len: int) -> Tuple[List[List[int]], List[List[int]], int]:
    vocab = rng.choice([1, 2, 3, 5, 17, 300, 2**22 + 5, 2**40, 2**63 - 1])
    low = 0 if vocab < 2**22 else vocab - rng.choice([2, 5, 50])
    pick = lambda: rng.randrange(low, vocab)  # noqa: E731
    ys, yps = [], []
    for _ in range(batch):
        a = [pick() for _ in range(rng.randint(0, max_len))]
        if rng.random() < 0.6:  # y' as edits of y: long common subsequences
            b = [t if rng.random() < 0.7 else pick() for t in a if rng.random() < 0.85]
        else:
            b = [pick() for _ in range(rng.randint(0, max_len))]
        ys.append(a)
        yps.append(b)
    return ys, yps, vocab


def lcs_valid(rng: random.Random) -> Case:
    batch = rng.choice([0, 1, 1, 2, 3, 5])
    ys, yps, vocab = lcs_rows(rng, batch, rng.choice([4, 16, 40, 70, 70, 140 if rng.random() < 0.2 else 65]))
    kind = rng.choice(["torch", "torch", "numpy", "list"])
    dtypes = [torch.int64, torch.int32] if vocab < 2**31 else [torch.int64]
    dtypes += [torch.int16, torch.uint8] if vocab <= 127 else []
    dt_y, dt_yp = rng.choice(dtypes), rng.choice(dtypes)

    def padded(rows: List[List[int]], dtype: torch.dtype, pad: int) -> Tuple[torch.Tensor, List[int]]:
        width = max([len(r) for r in rows] + [0]) + rng.choice([0, 0, 2])
        out = torch.full((len(rows), width), pad, dtype=torch.int64)
        for k, r in enumerate(rows):
            out[k, : len(r)] = torch.tensor(r, dtype=torch.int64)
        return out.to(dtype), [len(r) for r in rows]

    mode = rng.choice(["lengths", "pad", "pad_out_of_range", "full"])
    # "pad": a negative pad_id (allowed only in the padding); otherwise the padding columns
    # hold ids 0/1, which an out-of-range pad_id (2**32 + 1, 2**70, ...) wraps to in int32.
    pad = rng.choice([-1, -100]) if mode == "pad" else rng.choice([0, 1])
    y, yl = padded(ys, dt_y if mode != "pad" or dt_y != torch.uint8 else torch.int64, pad if dt_y != torch.uint8 else 0)
    yp, ypl = padded(yps, dt_yp if mode != "pad" or dt_yp != torch.uint8 else torch.int64, pad if dt_yp != torch.uint8 else 0)

    def run() -> None:
        kw: Dict[str, Any] = {}
        args: List[Any] = []
        if kind == "list":
            args = [[list(r) for r in ys], [list(r) for r in yps]]
            want_y, want_yp, want_len = reference.lcs_mask(y, yp, yl, ypl)
        else:
            ty, typ = maybe_strided(rng, y), maybe_strided(rng, yp)
            if mode == "lengths":
                lens = [yl, ypl]
                conv = rng.choice([lambda v: torch.tensor(v, dtype=torch.int64), lambda v: v,
                                   lambda v: np.array(v, dtype=rng.choice(["<i8", ">i4", "<i2"]))])
                args = [ty, typ, conv(yl), conv(ypl)]
                want = reference.lcs_mask(y, yp, lens[0], lens[1])
            elif mode == "pad":
                kw["pad_id"] = rng.choice([pad, np.int64(pad)])
                args = [ty, typ]
                want = reference.lcs_mask(y, yp, pad_id=pad)
            elif mode == "pad_out_of_range":
                kw["pad_id"] = rng.choice([2**32 + 1, -(2**40), 2**70, np.uint64(2**64 - 1)])
                args = [ty, typ]
                # ids equal to pad wrap-around candidates must not count as padding
                want = reference.lcs_mask(y, yp)
            else:
                args = [ty, typ]
                want = reference.lcs_mask(y, yp)
            want_y, want_yp, want_len = want
            if kind == "numpy":
                args[0], args[1] = args[0].numpy(), args[1].numpy()
        out = with_threads(rng, lambda: drift.lcs_mask(*args, **kw))
        if kind == "list":
            got_y = [list(map(bool, m)) for m in out.y]
            got_yp = [list(map(bool, m)) for m in out.y_prime]
            want_y = [m[: len(r)] for m, r in zip(want_y, ys)]
            want_yp = [m[: len(r)] for m, r in zip(want_yp, yps)]
        else:
            got_y, got_yp = np.asarray(out.y).tolist(), np.asarray(out.y_prime).tolist()
        if got_y != want_y or got_yp != want_yp or np.asarray(out.lcs_length).tolist() != want_len:
            raise Bad(f"lcs masks differ from the reference ({kind}, {mode}, vocab {vocab})")

    return Case("lcs_mask", run)


def lcs_bad(rng: random.Random) -> Case:
    ys, yps, _ = lcs_rows(rng, rng.randint(1, 3), 12)
    width = max(len(r) for r in ys) + 1
    y = torch.zeros(len(ys), width, dtype=torch.int64)
    yp = torch.zeros(len(ys), max(len(r) for r in yps) + 1, dtype=torch.int64)
    B, M, N = y.shape[0], y.shape[1], yp.shape[1]
    choices: List[Tuple[Callable[[], Any], Tuple[str, ...]]] = [
        (lambda: drift.lcs_mask(y[0], yp), ("y",)),
        (lambda: drift.lcs_mask(y, yp[None]), ("y_prime",)),
        (lambda: drift.lcs_mask(y.double(), yp), ("y",)),
        (lambda: drift.lcs_mask(y, yp.bool()), ("y_prime",)),
        (lambda: drift.lcs_mask(y, yp.to(torch.uint16)), ("y_prime",)),
        (lambda: drift.lcs_mask(y, yp[:0] if B > 0 else yp), ("y_prime",)),
        (lambda: drift.lcs_mask(y, yp, torch.full((B,), M + 1)), ("y_lengths",)),
        (lambda: drift.lcs_mask(y, yp, None, torch.full((B,), -1)), ("y_prime_lengths",)),
        (lambda: drift.lcs_mask(y, yp, torch.full((B + 1,), 1)), ("y_lengths",)),
        (lambda: drift.lcs_mask(y, yp, torch.full((B,), 1.0)), ("y_lengths",)),
        (lambda: drift.lcs_mask(y, yp, [2**70] * B), ("y_lengths",)),
        (lambda: drift.lcs_mask(y, yp, "abc"), ("y_lengths",)),
        (lambda: drift.lcs_mask(y - 5, yp), ("y",)),
        (lambda: drift.lcs_mask(y, yp - 100, pad_id=rng.choice([None, 5])), ("y_prime",)),
        (lambda: drift.lcs_mask(y, yp, pad_id=rng.choice([1.5, "0", True, None.__class__])), ("pad_id",)),
        (lambda: drift.lcs_mask(y, yp.numpy()), ("y_prime",)),
        (lambda: drift.lcs_mask(y.numpy(), yp), ("y_prime",)),
        (lambda: drift.lcs_mask(y.numpy().astype(np.float32), yp.numpy()), ("y",)),
        (lambda: drift.lcs_mask(y.to_sparse(), yp), ("y",)),
        (lambda: drift.lcs_mask(y, yp.to("meta")), ("y_prime",)),
        (lambda: drift.lcs_mask(y.to("meta"), yp.to("meta")), ("y",)),
        (lambda: drift.lcs_mask([[1, 2**rng.choice([63, 64, 80])]], [[1]]), ("y[",)),
        (lambda: drift.lcs_mask([[1]], [[-1, 2**63]]), ("y_prime[",)),
        (lambda: drift.lcs_mask([[1, 2]], [[0.5]]), ("y_prime[",)),
        (lambda: drift.lcs_mask([[1, 2]], [[1]], pad_id=0), ("pad_id",)),
        (lambda: drift.lcs_mask([[1, 2]], [[1]], [2]), ("y_lengths",)),
        (lambda: drift.lcs_mask([[1, 2]], "ab"), ("y_prime",)),
        (lambda: drift.lcs_mask([1, 2], rng.choice([[1], [[1]], (1, 5)])), ("y",)),  # flat: not two pairs
        (lambda: drift.lcs_mask([[1, 2]], rng.choice([[3], (np.int64(3), 4)])), ("y_prime",)),
        (lambda: drift.lcs_mask(np.array([[2**63]], dtype=np.uint64), np.array([[1]], dtype=np.uint64)), ("y",)),
        (lambda: drift.lcs_mask(object(), yp), ("y",)),
    ]
    call, names = rng.choice(choices)
    return Case("lcs_mask", lambda: with_threads(rng, call), names)


# ---- token_logps / oal_loss ----------------------------------------------------------------


def vocab_shape(rng: random.Random) -> Tuple[int, int, int]:
    B = rng.choice([0, 1, 1, 2, 3])
    T = rng.choice([0, 1, 2, 5, 9])
    V = rng.choice([1, 2, 3, 7, 33, 130, 200, 2049 if rng.random() < 0.1 else 64])
    return B, T, V


def token_logps_valid(rng: random.Random) -> Case:
    B, T, V = vocab_shape(rng)
    dtype = rng.choice(LOGITS_DTYPES)
    special = rng.random() < 0.1
    x = rand_logits(rng, (B, T, V), dtype, special)
    labels = rand_ids(rng, (B, T), V, id_dtype(rng, V))
    use_mask = rng.random() < 0.6
    mask = rand_bool(rng, (B, T))
    if not use_mask:
        labels = torch.where(mask, labels, torch.full_like(labels, -100)) if labels.dtype != torch.uint8 else labels
    grad_check = not special and rng.random() < 0.5

    def run() -> None:
        leaf = maybe_strided(rng, x.clone()).requires_grad_(grad_check)
        out = with_threads(rng, lambda: drift.token_logps(leaf, labels, mask if use_mask else None))
        x64 = x.double().requires_grad_(grad_check)
        want = reference.token_logps(x64, labels.long(), mask if use_mask else None)
        if out.dtype != (torch.float64 if dtype == torch.float64 else torch.float32):
            raise Bad(f"token_logps dtype {out.dtype} for {dtype} logits")
        close(out, want, logits_tol(dtype, x), 1e-6, f"token_logps ({dtype})")
        if grad_check and B * T:
            g = torch.randn(B, T, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
            (got,) = torch.autograd.grad((out.double() * g).sum(), leaf)
            (ref,) = torch.autograd.grad((want * g).sum(), x64)
            if got.dtype != dtype:
                raise Bad(f"grad dtype {got.dtype} for {dtype} logits")
            close(got, ref, grad_tol(dtype), grad_tol(dtype), f"token_logps grad ({dtype})")

    return Case("token_logps", run)


def oal_valid(rng: random.Random) -> Case:
    B, T, V = vocab_shape(rng)
    M = rng.choice([0, 1, 3, 8])
    dtype = rng.choice(LOGITS_DTYPES)
    special = rng.random() < 0.08
    x = rand_logits(rng, (B, T, V), dtype, special)
    targets = rand_ids(rng, (B, M), V, id_dtype(rng, V))
    tmask = rand_bool(rng, (B, M)) if rng.random() < 0.5 else None
    if tmask is None and M and targets.dtype != torch.uint8:
        targets = torch.where(rand_bool(rng, (B, M), 0.2), torch.full_like(targets, -100), targets)
    lmask = rand_bool(rng, (B, T)) if rng.random() < 0.7 else None
    reduction = rng.choice(["mean", "sum", "none"])
    grad_check = dtype == torch.float64 and not special

    def run() -> None:
        leaf = maybe_strided(rng, x.clone()).requires_grad_(grad_check)
        out = with_threads(rng, lambda: drift.oal_loss(leaf, targets, logits_mask=lmask, targets_mask=tmask,
                                                       reduction=reduction))
        x64 = x.double().requires_grad_(grad_check)
        want = reference.oal_loss(x64, targets.long(), logits_mask=lmask, targets_mask=tmask, reduction=reduction)
        tol = logits_tol(dtype, x) * max(1, M)
        close(out, want, tol, 1e-6, f"oal_loss ({dtype}, {reduction})")
        if grad_check and want.requires_grad:
            w = torch.arange(1, out.numel() + 1, dtype=torch.float64).view(out.shape)
            (got,) = torch.autograd.grad((out * w).sum(), leaf)
            (ref,) = torch.autograd.grad((want * w).sum(), x64)
            close(got, ref, 1e-9, 1e-9, "oal_loss grad (float64)")

    return Case("oal_loss", run)


def vocab_bad(rng: random.Random) -> Case:
    B, T, V = rng.randint(1, 3), rng.randint(1, 4), rng.randint(2, 9)
    x = torch.randn(B, T, V)
    labels = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.bool)
    t = torch.randint(0, V, (B, 3))
    choices = [
        (lambda: drift.token_logps(x, torch.full((B, T), V)), ("labels",)),
        (lambda: drift.token_logps(x, torch.full((B, T), -3)), ("labels",)),
        (lambda: drift.token_logps(x, labels.float()), ("labels",)),
        (lambda: drift.token_logps(x, labels[:, :-1]), ("labels",)),
        (lambda: drift.token_logps(x[0], labels), ("logits",)),
        (lambda: drift.token_logps(x.long(), labels), ("logits",)),
        (lambda: drift.token_logps(x[..., :0], labels), ("logits",)),
        (lambda: drift.token_logps(x, labels, mask.to(torch.uint8)), ("mask",)),
        (lambda: drift.token_logps(x, labels, mask[:, :-1]), ("mask",)),
        (lambda: drift.token_logps(x.numpy(), labels), ("logits",)),
        (lambda: drift.token_logps(x.to_sparse(), labels), ("logits",)),
        (lambda: drift.token_logps(x, labels.to("meta")), ("labels",)),
        (lambda: drift.token_logps(x.to("meta"), labels.to("meta")), ("logits",)),
        (lambda: drift.oal_loss(x, torch.full((B, 2), V + rng.randint(0, 2**40))), ("targets",)),
        (lambda: drift.oal_loss(x, t, reduction=rng.choice(["avg", None, 1])), ("reduction",)),
        (lambda: drift.oal_loss(x, t, logits_mask=torch.ones(B, T)), ("logits_mask",)),
        (lambda: drift.oal_loss(x, t, targets_mask=torch.ones(B, 4, dtype=torch.bool)), ("targets_mask",)),
        (lambda: drift.oal_loss(x, t[0]), ("targets",)),
        (lambda: drift.oal_loss(x, t[:0] if B > 1 else t[:, None]), ("targets",)),
        (lambda: drift.oal_loss(x.to(torch.int32), t), ("logits",)),
        (lambda: drift.oal_loss(x, t.to(torch.uint16)), ("targets",)),
    ]
    call, names = rng.choice(choices)
    return Case("token_logps/oal_loss", lambda: with_threads(rng, call), names)


# ---- spin_loss / dam_loss / drift_loss -----------------------------------------------------


def spin_valid(rng: random.Random) -> Case:
    B = rng.choice([0, 1, 2, 5])
    dtype = rng.choice([torch.float32, torch.float64, torch.bfloat16, torch.float16])
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    vals = [(torch.randn(B, generator=g, dtype=torch.float64) * rng.choice([1, 30])).to(dtype) for _ in range(4)]
    beta = rng.choice([0.1, 1, np.float32(0.5), np.float64(2.0), 1e-3])

    def run() -> None:
        out = drift.spin_loss(*vals, beta=beta)
        want = reference.spin_loss(*[v.double() for v in vals], beta=float(beta))
        tol = 1e-9 if dtype == torch.float64 else 2e-5
        for got, ref, what in zip(out, want, ("loss", "chosen_rewards", "rejected_rewards", "margins")):
            close(got, ref, tol * (1 + float(ref.abs().max()) if ref.numel() else 1), tol, f"spin_loss {what} ({dtype})")

    return Case("spin_loss", run)


def dam_valid(rng: random.Random) -> Case:
    B, Tc, Tr = rng.choice([0, 1, 3]), rng.choice([0, 1, 6, 300]), rng.choice([0, 2, 7])
    dtype = rng.choice([torch.float32, torch.float64, torch.bfloat16, torch.float16])
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    pc = (-torch.rand(B, Tc, generator=g, dtype=torch.float64) * 3).to(dtype)
    pr = (-torch.rand(B, Tr, generator=g, dtype=torch.float64) * 3).to(dtype)
    mc, mr = rand_bool(rng, (B, Tc)), rand_bool(rng, (B, Tr))
    rc, rr = -torch.rand(B, generator=g) * 50, -torch.rand(B, generator=g) * 50
    beta = rng.choice([0.1, 0.5])

    def run() -> None:
        out = drift.dam_loss(pc, pr, rc, rr, mc, mr, beta=beta)
        want = reference.dam_loss(pc.double(), pr.double(), rc.double(), rr.double(), mc, mr, beta=beta)
        tol = 1e-9 if dtype == torch.float64 else 2e-5
        for got, ref, what in zip(out, want, ("loss", "chosen_rewards", "rejected_rewards", "margins")):
            close(got, ref, tol * (1 + (float(ref.abs().max()) if ref.numel() else 0)), tol, f"dam_loss {what}")

    return Case("dam_loss", run)


def drift_valid(rng: random.Random) -> Case:
    B, Tc, Tr, V = rng.choice([1, 2, 3]), rng.choice([1, 4, 7]), rng.choice([1, 3, 6]), rng.choice([2, 5, 40])
    dtype = rng.choice([torch.float32, torch.float64, torch.bfloat16])
    cl, rl = rand_logits(rng, (B, Tc, V), dtype, False), rand_logits(rng, (B, Tr, V), dtype, False)
    clab, rlab = rand_ids(rng, (B, Tc), V), rand_ids(rng, (B, Tr), V)
    cm, rm = rand_bool(rng, (B, Tc)), rand_bool(rng, (B, Tr))
    kw: Dict[str, Any] = dict(beta=rng.choice([0.1, np.float32(0.3)]), oal_weight=rng.choice([0.0, 1.0, np.float64(0.5)]),
                              loss_type=rng.choice(["sigmoid", "hinge", "ipo"]))
    # chosen labels outside the masks: anything once chosen_response_mask or oal_targets says what y is, else -100
    fill = -100
    if rng.random() < 0.5:
        kw["oal_targets"] = rand_ids(rng, (B, rng.choice([1, 4])), V)
        if rng.random() < 0.5:
            kw["oal_targets_mask"] = rand_bool(rng, tuple(kw["oal_targets"].shape))
        fill = rng.choice([-100, V + 7, -1])
    elif rng.random() < 0.5:
        kw["chosen_response_mask"] = cm | rand_bool(rng, (B, Tc))
        clab = torch.where(kw["chosen_response_mask"], clab, rng.choice([-100, V + 7, -1]))
    clab = torch.where(cm, clab, fill) if "chosen_response_mask" not in kw else clab
    rlab = torch.where(rm, rlab, rng.choice([-100, V + 3]))
    rc, rr = -torch.rand(B) * 20, -torch.rand(B) * 20
    if rng.random() < 0.5:
        kw["rejected_response_mask"] = rand_bool(rng, (B, Tr))

    def run() -> None:
        args = [cl, clab, cm, rl, rlab, rm, rc, rr]
        out = drift.drift_loss(*args, **kw)
        ref_kw = dict(kw, beta=float(kw["beta"]), oal_weight=float(kw["oal_weight"]))
        want = reference.drift_loss(*[a.double() if a.is_floating_point() else a for a in args], **ref_kw)
        tol = (1e-9 if dtype == torch.float64 else 2e-4) * (1 + float(cl.abs().max()) + float(rl.abs().max())) * V
        for got, ref, what in zip(out, want, DRIFT_FIELDS):
            close(got, ref, tol, 1e-5, f"drift_loss {what}")

    return Case("drift_loss", run)


DRIFT_FIELDS = ("loss", "self_play_loss", "oal_loss", "chosen_rewards", "rejected_rewards", "margins")


def losses_bad(rng: random.Random) -> Case:
    B = rng.randint(1, 3)
    z = torch.zeros(B)
    tok, m = torch.zeros(B, 4), torch.ones(B, 4, dtype=torch.bool)
    x, lab = torch.randn(B, 4, 5), torch.randint(0, 5, (B, 4))
    args = [x, lab, m, x, lab, m, z, z]

    def with_arg(i: int, v: Any) -> List[Any]:
        a = list(args)
        a[i] = v
        return a

    choices = [
        (lambda: drift.spin_loss(z, z, z, z, beta=rng.choice([0, -1.0, float("nan"), float("inf")])), ("beta",)),
        (lambda: drift.spin_loss(z, z, z, z, beta=rng.choice(["0.1", True, None, np.bool_(True), [0.1]])), ("beta",)),
        (lambda: drift.spin_loss(z.long(), z, z, z), ("policy_chosen_logps",)),
        (lambda: drift.spin_loss(z, z[:0] if B > 1 else z[None], z, z), ("policy_rejected_logps",)),
        (lambda: drift.spin_loss(z, z, z.to("meta"), z), ("reference_chosen_logps",)),
        (lambda: drift.spin_loss(z, z, z, [0.0] * B), ("reference_rejected_logps",)),
        (lambda: drift.spin_loss(z.to_sparse(), z, z, z), ("policy_chosen_logps",)),
        (lambda: drift.dam_loss(tok, tok, z, z, m.to(torch.uint8), m), ("chosen_mask",)),
        (lambda: drift.dam_loss(tok, tok, z, z, m, m[:, :-1]), ("rejected_mask",)),
        (lambda: drift.dam_loss(tok, tok[:0], z, z, m, m[:0]), ("policy_rejected_token_logps",)),
        (lambda: drift.dam_loss(tok.long(), tok, z, z, m, m), ("policy_chosen_token_logps",)),
        (lambda: drift.drift_loss(*args, oal_weight=rng.choice([-1.0, float("nan")])), ("oal_weight",)),
        (lambda: drift.drift_loss(*args, oal_weight="1"), ("oal_weight",)),
        (lambda: drift.drift_loss(*with_arg(1, torch.where(m, 99, lab))), ("chosen_labels",)),
        (lambda: drift.drift_loss(*with_arg(4, lab.float())), ("rejected_labels",)),
        (lambda: drift.drift_loss(*with_arg(0, x[0])), ("chosen_logits",)),
        (lambda: drift.drift_loss(*with_arg(5, m.to(torch.uint8))), ("rejected_mask",)),
        (lambda: drift.drift_loss(*args, oal_targets=torch.full((B, 2), 7)), ("oal_targets",)),
        (lambda: drift.drift_loss(*args, oal_targets=lab, oal_targets_mask=m.long()), ("oal_targets_mask",)),
        (lambda: drift.drift_loss(*args, rejected_response_mask=m[:, :2]), ("rejected_response_mask",)),
        (lambda: drift.drift_loss(*with_arg(6, z[:0])), ("reference_chosen_logps",)),
        (lambda: drift.drift_loss(*args, loss_type=rng.choice(["kto", "", None, 1])), ("loss_type",)),
        (lambda: drift.spin_loss(z, z, z, z, loss_type="dpo"), ("loss_type",)),
        (lambda: drift.DriftLoss(beta=0.0), ("beta",)),
        (lambda: drift.DriftLoss(oal_weight=-2), ("oal_weight",)),
    ]
    call, names = rng.choice(choices)
    return Case("spin/dam/drift_loss", call, names)


# ---- torch.ops.drift.* ---------------------------------------------------------------------


def ops_valid(rng: random.Random) -> Case:
    """The forward ops against float64, then their backward ops against the public autograd."""
    B, T, V = vocab_shape(rng)
    dtype = rng.choice(LOGITS_DTYPES)
    x = rand_logits(rng, (B, T, V), dtype, rng.random() < 0.1)
    labels, mask = rand_ids(rng, (B, T), V), rand_bool(rng, (B, T))
    M = rng.choice([0, 2, 5])
    targets, tmask = rand_ids(rng, (B, M), V), rand_bool(rng, (B, M))

    def run() -> None:
        ops = torch.ops.drift
        logps, lse = ops.token_logps_forward(maybe_strided(rng, x), labels, mask)
        lp64 = x.double().log_softmax(-1) if V else x.double()
        want_lse = torch.where(mask, x.double().logsumexp(-1), 0) if B * T else torch.zeros(B, T)
        nan_rows = mask & (x.double().isnan() | (x.double() == float("inf"))).any(-1)  # documented: NaN
        want_lse = torch.where(nan_rows, float("nan"), want_lse)
        close(lse, want_lse, logits_tol(dtype, x), 1e-6, "token_logps_forward lse")
        close(logps, reference.token_logps(x.double(), labels, mask), logits_tol(dtype, x), 1e-6, "token_logps_forward")
        tl, lse2, argmax = ops.oal_forward(maybe_strided(rng, x), targets, mask, tmask)
        if argmax.dtype != torch.int64 or bool(((argmax < -1) | (argmax >= max(T, 1))).any()):
            raise Bad("oal_forward argmax out of [-1, T)")
        picked = lp64[torch.arange(B)[:, None], argmax.clamp(min=0), targets] if B * M and T else torch.zeros(B, M)
        close(tl, torch.where(argmax >= 0, picked, 0), logits_tol(dtype, x), 1e-6, "oal_forward target_logps")
        g = torch.randn(B, T).to(logps.dtype)
        grad = ops.token_logps_backward(g, x, labels, mask, lse)
        soft = lp64.exp()
        onehot = torch.nn.functional.one_hot(labels, V).double() if B * T else torch.zeros(B, T, V, dtype=torch.float64)
        want = torch.where(mask[..., None], g.double()[..., None] * (onehot - soft), 0)
        finite = torch.isfinite(x.double()).all(-1, keepdim=True)
        close(torch.where(finite, grad.double(), 0), torch.where(finite, want, 0), grad_tol(dtype), grad_tol(dtype),
              "token_logps_backward")
        gb = ops.oal_backward(torch.randn(B, M).to(tl.dtype), x, targets, lse2, argmax)
        if gb.shape != x.shape or gb.dtype != x.dtype:
            raise Bad("oal_backward output shape/dtype")

    return Case("torch.ops.drift", lambda: with_threads(rng, run))


def ops_bad(rng: random.Random) -> Case:
    """Bad direct op calls; on the meta device (30%) the fake kernels must refuse them alike."""
    B, T, V, M = rng.randint(1, 2), rng.randint(1, 3), rng.randint(2, 6), rng.randint(1, 3)
    meta = rng.random() < 0.3
    dev = "meta" if meta else "cpu"
    x = torch.randn(B, T, V, device=dev)
    ids, m = torch.randint(0, V, (B, T), device=dev), torch.ones(B, T, dtype=torch.bool, device=dev)
    tg, tm = torch.randint(0, V, (B, M), device=dev), torch.ones(B, M, dtype=torch.bool, device=dev)
    acc, acc_m = torch.zeros(B, T, device=dev), torch.zeros(B, M, device=dev)
    am = torch.zeros(B, M, dtype=torch.long, device=dev)
    ops = torch.ops.drift
    rank = lambda t: t[0] if rng.random() < 0.5 else t[None]  # noqa: E731
    choices = [
        (lambda: ops.token_logps_forward(rank(x), ids, m), ("token_logps_forward: logits",)),
        (lambda: ops.token_logps_forward(x, rank(ids), m), ("token_logps_forward: labels",)),
        (lambda: ops.token_logps_forward(x, ids, rank(m)), ("token_logps_forward: mask",)),
        (lambda: ops.token_logps_forward(x, ids, m.to(torch.uint8)), ("token_logps_forward: mask",)),
        (lambda: ops.token_logps_forward(x, ids.int(), m), ("token_logps_forward: labels",)),
        (lambda: ops.token_logps_forward(x, ids + V, m), ("labels",)),
        (lambda: ops.token_logps_forward(x.long(), ids, m), ("token_logps_forward: logits",)),
        (lambda: ops.token_logps_backward(rank(acc), x, ids, m, acc), ("token_logps_backward: grad_logps",)),
        (lambda: ops.token_logps_backward(acc, x, ids, m, acc.double()), ("token_logps_backward: lse",)),
        (lambda: ops.token_logps_backward(acc, x, ids - V - 1, m, acc), ("labels",)),
        (lambda: ops.oal_forward(x, rank(tg), m, tm), ("oal_forward: targets",)),
        (lambda: ops.oal_forward(x, tg, m, rank(tm)), ("oal_forward: targets_mask",)),
        (lambda: ops.oal_forward(x, tg, m[:, :0], tm), ("oal_forward: logits_mask",)),
        (lambda: ops.oal_forward(x, tg + V, m, tm), ("targets",)),
        (lambda: ops.oal_backward(acc_m, x, tg, acc, am + T), ("argmax",)),
        (lambda: ops.oal_backward(acc_m, x, tg, acc, am - 2), ("argmax",)),
        (lambda: ops.oal_backward(acc_m, x, tg + V, acc, am), ("targets",)),
        (lambda: ops.oal_backward(rank(acc_m), x, tg, acc, am), ("oal_backward: grad_target_logps",)),
        (lambda: ops.oal_backward(acc_m, x, tg, acc, am.int()), ("oal_backward: argmax",)),
        (lambda: ops.oal_backward(acc_m, rank(x), tg, acc, am), ("oal_backward: logits",)),
    ]
    if meta:  # values (ids in range, argmax positions) are checked only where data exists
        choices = [c for c in choices if ":" in c[1][0]]
    call, names = rng.choice(choices)
    return Case("torch.ops.drift" + (" (meta)" if meta else ""), call, names)


def threads_case(rng: random.Random) -> Case:
    n = rng.choice([0, 1, 5, 256, 257, 2**40, 2**70, np.int64(4), -1, 1.5, True, "2"])

    def run() -> None:
        try:
            drift.set_num_threads(n)
            got = drift.get_num_threads()
            want = min(int(n), 256)
            if int(n) > 0 and got != want:
                raise Bad(f"set_num_threads({n}) -> get_num_threads() == {got}, want {want}")
        finally:
            drift.set_num_threads(0)

    bad = isinstance(n, (bool, float, str)) or (not isinstance(n, (bool, float, str)) and int(n) < 0)
    return Case("set_num_threads", run, ("n",) if bad else ())


GENERATORS: List[Tuple[float, Callable[[random.Random], Case]]] = [
    (0.20, lcs_valid), (0.10, lcs_bad), (0.13, token_logps_valid), (0.11, oal_valid), (0.08, vocab_bad),
    (0.05, spin_valid), (0.05, dam_valid), (0.07, drift_valid), (0.07, losses_bad), (0.07, ops_valid),
    (0.05, ops_bad), (0.02, threads_case),
]


def make_case(seed: int, index: int) -> Case:
    rng = random.Random(f"drift-fuzz-{seed}-{index}")
    weights = [w for w, _ in GENERATORS]
    gen = rng.choices([g for _, g in GENERATORS], weights)[0]
    return gen(rng)


ARG_PREFIX = re.compile(r"^([A-Za-z_][\w\[\]]*(?:: [a-z_]+)?)")


def check(case: Case) -> Tuple[str, Optional[str]]:
    """Runs a case: ``(outcome, failure)``, outcome "ok" / "rejected", failure None when fine."""
    try:
        case.run()
    except Bad as exc:
        return "wrong", str(exc)
    except (TypeError, ValueError) as exc:
        if not case.names:
            return "unexpected", f"{type(exc).__name__}: {exc}"
        message = str(exc)
        if not any(message.startswith(n) and (n.endswith("[") or message[len(n):len(n) + 1] in (":", "/", "["))
                   for n in case.names):
            return "unnamed", f"{type(exc).__name__} does not start with {case.names}: {message[:200]}"
        return "rejected", None
    except Exception as exc:  # noqa: BLE001 - any other exception type is a finding
        return "unexpected", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
    if case.names:
        return "accepted", f"bad input accepted (expected an error naming {case.names})"
    return "ok", None


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--stop", type=int, default=1000)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    counts: Counter = Counter()
    failures = 0
    for i in range(args.start, args.stop):
        print(f"CASE {i}", flush=True)
        case = make_case(args.seed, i)
        outcome, failure = check(case)
        counts[f"{case.entry}:{outcome}"] += 1
        if failure is not None:
            failures += 1
            print(f"FAIL {i} {case.entry} {failure}".replace("\n", "\n    "), flush=True)
        elif args.verbose:
            print(f"     {i} {case.entry} {outcome}", flush=True)
    summary = {"cases": args.stop - args.start, "failures": failures, "counts": dict(counts),
               "drift": drift.__file__, "sanitized": drift.build_info()["sanitized"]}
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
