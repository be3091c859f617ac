"""Shared by the tests of the fused vocabulary ops (drift.oal_loss, drift.token_logps): their
tolerances, seeded inputs, the fused-vs-reference runner, and OPS, the table of (op, reference,
inputs) that tests/test_vocab_ops.py drives the checks both ops share with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

import drift
from drift import reference

# Tolerances per dtype (values, gradients). Low-precision logits are exact inputs to the fp32
# accumulation, so values stay tight; gradients are rounded to the logits' dtype.
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-4, 5e-2),
    torch.float16: (1e-4, 5e-2),
}


def make_oal(batch, seq, vocab, width, dtype=torch.float32, seed=0, scale=3.0):
    """(logits, targets, logits_mask, targets_mask), with a duplicate id in every row when width >= 3."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, vocab, (batch, width), generator=g)
    logits_mask = torch.rand(batch, seq, generator=g) >= 0.25
    targets_mask = torch.rand(batch, width, generator=g) >= 0.2
    if width >= 3:
        targets[:, 2] = targets[:, 0]  # a duplicate id in every row
    return logits, targets, logits_mask, targets_mask


def make_token(batch, seq, vocab, dtype=torch.float32, masked=0.3, seed=0, scale=3.0):
    """(logits, labels, mask)."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * scale).to(dtype)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.rand(batch, seq, generator=g) >= masked
    return logits, labels, mask


def fused_and_reference(fused, ref, logits, args, kwargs, upstream):
    """``fused(logits, *args, **kwargs)`` and its gradient under the upstream weights
    ``upstream(out.shape)`` (float64, CPU) on the logits' device; ``ref`` in float64, always on the CPU."""
    x = logits.detach().clone().requires_grad_(True)
    out = fused(x, *args, **kwargs)
    upstream = upstream(out.shape)
    # The upstream weights live next to each output: a CUDA output times a CPU tensor raises.
    (grad,) = torch.autograd.grad((out.double() * upstream.to(out.device)).sum(), x)
    xr = logits.detach().cpu().double().requires_grad_(True)
    cpu = lambda t: t.cpu() if isinstance(t, torch.Tensor) else t  # noqa: E731
    want = ref(xr, *(cpu(a) for a in args), **{k: cpu(v) for k, v in kwargs.items()}) + 0 * xr.sum()  # rows of 0 stay in the graph
    (ref_grad,) = torch.autograd.grad((want * upstream).sum(), xr)
    return out, grad, want, ref_grad


@dataclass(frozen=True)
class VocabOp:
    """One fused vocabulary op as the shared checks see it.

    ``inputs(shape, dtype, seed)`` returns ``(logits, args, kwargs, valid)``: the call is
    ``fused(logits, *args, **kwargs)`` and ``reference(...)`` alike, ``valid`` the (B, T) rows
    that may get a gradient. ``upstream(out_shape)``: the float64 weights of the output in the
    gradient checks. ``op_inputs``: the tensors ``torch.ops.drift.<name>_forward`` takes after
    the logits. ``native_views``: the views of ``drift._C.<name>_forward`` for (2, 3, V) logits.
    ``with_ids(args, kwargs, ids, mask=None)``: ``(args, kwargs)`` with ``ids`` in place of the
    op's ids and ``mask`` as their mask (None: the default mask, from the ignore index).
    """

    name: str
    fused: Callable
    reference: Callable
    shapes: tuple
    inputs: Callable
    upstream: Callable
    op_inputs: Callable
    saved: Callable
    native_views: Callable
    bad_ids: Callable
    with_ids: Callable
    check: Callable = field(default=lambda out, grad, args, kwargs, valid, shape: None)

    def __str__(self) -> str:
        return self.name


def _oal_inputs(shape, dtype=torch.float32, seed=0):
    logits, targets, logits_mask, targets_mask = make_oal(*shape, dtype=dtype, seed=seed)
    return logits, (targets,), dict(logits_mask=logits_mask, targets_mask=targets_mask, reduction="none"), logits_mask


def _oal_check(out, grad, args, kwargs, valid, shape):
    assert out.shape == (shape[0],)
    assert bool((grad[~valid] == 0).all())  # no gradient outside the valid positions


def _token_inputs(shape, dtype=torch.float32, seed=0):
    logits, labels, mask = make_token(*shape, dtype=dtype, seed=seed)
    return logits, (labels, mask), {}, mask


def _token_check(out, grad, args, kwargs, valid, shape):
    labels, mask = args
    assert out.shape == labels.shape and grad.shape == tuple(shape)
    # Masked positions: exactly 0 and no gradient.
    assert bool((out[~mask] == 0).all())
    assert bool((grad[~mask] == 0).all())


def _oal_with_ids(args, kwargs, ids, mask=None):
    kwargs = {k: v for k, v in kwargs.items() if k != "targets_mask"}
    return (ids,), (kwargs if mask is None else dict(kwargs, targets_mask=mask))


def _native_oal_views(vocab):
    return dict(
        logits=torch.randn(2, 3, vocab), targets=torch.zeros(2, 4, dtype=torch.int64),
        logits_mask=torch.ones(2, 3, dtype=torch.bool), targets_mask=torch.ones(2, 4, dtype=torch.bool),
        target_logps=torch.empty(2, 4), lse=torch.empty(2, 3), argmax=torch.empty(2, 4, dtype=torch.int64),
    )


def _native_token_views(vocab):
    return dict(logits=torch.randn(2, 3, vocab), labels=torch.zeros(2, 3, dtype=torch.int64),
                mask=torch.ones(2, 3, dtype=torch.bool), logps=torch.empty(2, 3), lse=torch.empty(2, 3))


def _saved(name):
    from drift.ops import oal, token_logps

    return (oal.OAL if name == "oal" else token_logps.TOKEN_LOGPS).saved


OAL = VocabOp(
    name="oal",
    fused=drift.oal_loss,
    reference=reference.oal_loss,
    shapes=((3, 7, 997, 6), (1, 1, 5, 1), (2, 5, 1, 3), (2, 4, 4099, 9)),
    inputs=_oal_inputs,
    upstream=lambda shape: torch.linspace(0.5, 1.5, shape.numel(), dtype=torch.float64).reshape(shape),
    op_inputs=lambda args, kwargs: (args[0], kwargs["logits_mask"], kwargs["targets_mask"]),
    saved=lambda inputs, outputs: _saved("oal")(inputs, outputs),
    native_views=_native_oal_views,
    bad_ids=lambda args, kwargs, vocab: ((torch.full_like(args[0], vocab + 901),), {}),
    with_ids=_oal_with_ids,
    check=_oal_check,
)

TOKEN_LOGPS = VocabOp(
    name="token_logps",
    fused=drift.token_logps,
    reference=reference.token_logps,
    shapes=((3, 7, 997), (1, 1, 5), (2, 5, 1), (2, 3, 4099)),
    inputs=_token_inputs,
    upstream=lambda shape: torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
    op_inputs=lambda args, kwargs: args,
    saved=lambda inputs, outputs: _saved("token_logps")(inputs, outputs),
    native_views=_native_token_views,
    bad_ids=lambda args, kwargs, vocab: ((torch.full_like(args[0], vocab + 901), args[1]), {}),
    with_ids=lambda args, kwargs, ids, mask=None: ((ids,) if mask is None else (ids, mask), kwargs),
    check=_token_check,
)

OPS = (OAL, TOKEN_LOGPS)
