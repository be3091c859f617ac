"""``drift.oal_loss``: the occurrence-aware loss of METHOD.md section 2, fused.

Two ``torch.library`` custom ops (``_fused.define``: fake (meta) kernels, one kernel for CPU and
CUDA, an autograd formula whose backward is itself an op):

- ``drift::oal_forward(logits, targets, logits_mask, targets_mask) -> (target_logps, lse, argmax)``:
  per target slot ``m`` of row ``b``, ``max_{t valid} log_softmax(logits[b, t])[targets[b, m]]``
  for the first slot of each distinct valid id (0 elsewhere), its arg-max position (ties:
  the lowest; -1 where the slot does not count) and the row log-sum-exps ``lse`` (B, T).
- ``drift::oal_backward(grad_target_logps, logits, targets, lse, argmax) -> grad_logits``:
  ``sum_m grad[b, m] * (onehot(targets[b, m]) - softmax(logits[b, t]))`` on the arg-max rows,
  zeros elsewhere: the only (B, T, V) tensor the loss allocates.

The arithmetic is in ``cpp/include/drift/vocab.hpp``; the drivers in ``cpp/src/cpu/vocab.cpp``
and ``cpp/src/cuda/vocab.cu``.
"""

from __future__ import annotations

from typing import Optional

import torch

from drift.ops import _fused
from drift.ops._logits import (
    acc_dtype, check_ids, check_logits, check_mask, check_op_args, not_ignored, unit_stride_rows,
)

REDUCTIONS = ("mean", "sum", "none")
SCHEMAS = (
    "(Tensor logits, Tensor targets, Tensor logits_mask, Tensor targets_mask) -> (Tensor, Tensor, Tensor)",
    "(Tensor grad_target_logps, Tensor logits, Tensor targets, Tensor lse, Tensor argmax) -> Tensor",
)


def _check_forward(logits, targets, logits_mask, targets_mask):
    return check_op_args(
        "oal_forward", logits, (targets, "targets", "BM", "ids"), (logits_mask, "logits_mask", "BT", "mask"),
        (targets_mask, "targets_mask", "BM", "mask"),
    )


def _check_backward(grad_target_logps, logits, targets, lse, argmax):
    return check_op_args(
        "oal_backward", logits, (grad_target_logps, "grad_target_logps", "BM", "acc"),
        (targets, "targets", "BM", "ids"), (lse, "lse", "BT", "acc"), (argmax, "argmax", "BM", "ids"),
    )


def _empty_outputs(logits, targets, logits_mask, targets_mask):
    """The forward's outputs, allocated: target_logps (B, M) acc, lse (B, T) acc, argmax (B, M) int64."""
    batch, seq, _ = logits.shape
    width = targets.shape[1]
    acc = acc_dtype(logits.dtype)
    return (
        logits.new_empty((batch, width), dtype=acc),
        logits.new_empty((batch, seq), dtype=acc),
        logits.new_empty((batch, width), dtype=torch.int64),
    )


def _saved(inputs, outputs):
    """What the backward takes after the gradient: (logits, targets, lse, argmax)."""
    return inputs[0], inputs[1], outputs[1], outputs[2]


OAL = _fused.define("oal", SCHEMAS, (_check_forward, _check_backward), _empty_outputs, _saved)


def oal_double_backward(
    grad_grad: torch.Tensor, grad_target_logps: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
    argmax: torch.Tensor,
) -> tuple:
    """The derivatives of ``oal_backward``'s output (the arg-max positions held fixed).

    That output is ``sum_{m: argmax[b, m] = t} g[b, m] * (onehot(targets[b, m]) - p[b, t])``.
    Given ``grad_grad`` (B, T, V) on it, returns ``(d grad_target_logps, d logits)``:
    ``gg[b, t_m, v_m] - <gg[b, t_m], p[b, t_m]>`` (B, M) (0 where ``argmax`` is -1) and
    ``-G[b, t] * p * (gg - <gg, p>)`` (B, T, V) with ``G[b, t]`` the sum of ``g`` over the slots
    whose arg-max is t (0 on other rows). Plain torch ops, differentiable again.
    """
    acc = acc_dtype(logits.dtype)
    batch, seq, vocab = logits.shape
    if seq == 0 or targets.shape[1] == 0:
        return torch.zeros_like(grad_target_logps), torch.zeros_like(logits)
    valid = argmax >= 0
    pos = argmax.clamp(min=0)
    ids = torch.where(valid, targets, 0)
    hit = torch.zeros((batch, seq), dtype=torch.int64, device=logits.device).scatter_add(1, pos, valid.long()) > 0
    rows = hit[..., None]
    p = torch.softmax(torch.where(rows, logits.to(acc), 0), dim=-1)
    gg = torch.where(rows, grad_grad.to(acc), 0)
    dot = (gg * p).sum(-1)
    picked = gg.reshape(batch, seq * vocab).gather(1, pos * vocab + ids)
    d_grad = torch.where(valid, picked - dot.gather(1, pos), 0).to(grad_target_logps.dtype)
    g = torch.where(valid, grad_target_logps.to(acc), 0)
    gsum = torch.zeros((batch, seq), dtype=acc, device=logits.device).scatter_add(1, pos, g)
    d_logits = torch.where(rows, -gsum[..., None] * p * (gg - dot[..., None]), 0)
    return d_grad, d_logits.to(logits.dtype)


# backward inputs (grad, logits, targets, lse, argmax): the second order needs all but lse
_fused.define_double_backward("oal", oal_double_backward, keep=(0, 1, 2, 4))


def oal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    logits_mask: Optional[torch.Tensor] = None,
    targets_mask: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The occurrence-aware loss (OAL, METHOD.md section 2), fused.

    Per batch row ``b``: ``loss_b = -sum_{v in V(y_b)} max_{t valid} log softmax(logits[b, t])[v]``,
    ``V(y_b)`` the SET of distinct valid ids of ``targets[b]`` (duplicates count once).

    Args:
        logits: (B, T, V) float32/bfloat16/float16/float64 on CPU or CUDA: the policy's logits
            over the generated response ``y'`` (position t scores token ``y'_t``; the caller
            aligns, as for cross-entropy; only the V dimension must be contiguous).
        targets: (B, M) integer ids of the ground truth ``y``; valid ids must lie in [0, V).
        logits_mask: (B, T) bool, True on the generated positions the max runs over (prompt
            and padding excluded); default: every position.
        targets_mask: (B, M) bool, True on real target ids; default: where ``targets`` is not
            the number -100 (uint8 targets cannot be -100: all are real, 156 included).
        reduction: ``"mean"`` (sum of the B row losses divided by B, rows without targets or
            valid positions included as 0), ``"sum"``, or ``"none"`` ((B,) row losses).

    Returns:
        float32 (float64 for float64 logits) loss. A row with no valid position or no valid
        target contributes 0 (and no gradient). NaN logits at a valid position make that
        row's loss NaN (no error). The gradient flows only through the arg-max position of
        each id (ties: the lowest position); the backward writes
        ``softmax - onehot`` (scaled) on those rows and zeros elsewhere, in the logits' dtype.
        Twice differentiable (the arg-max positions held fixed): double backward
        (``create_graph=True``) runs plain torch ops on a (B, T, V) softmax.

    Raises:
        TypeError: non-tensor (or sparse, nested) arguments, unsupported dtypes, non-bool masks.
        ValueError: wrong ranks or shapes, mixed devices, V == 0, an unknown ``reduction``,
            valid target ids outside [0, V) (checked before any kernel reads logits at them;
            on CUDA by one small kernel and one host synchronisation).
    """
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    logits = check_logits(logits)
    batch, seq, _ = logits.shape
    targets = check_ids(targets, "targets", logits, "(B, M)")
    logits_mask = check_mask(logits_mask, "logits_mask", (batch, seq), "(B, T)", logits)
    targets_mask = check_mask(targets_mask, "targets_mask", tuple(targets.shape), "(B, M)", logits)
    if logits_mask is None:
        logits_mask = torch.ones((batch, seq), dtype=torch.bool, device=logits.device)
    if targets_mask is None:
        targets_mask = not_ignored(targets)
    target_logps = _fused.apply(
        OAL, unit_stride_rows(logits), targets.to(torch.int64).contiguous(), logits_mask.contiguous(),
        targets_mask.contiguous(),
    )
    if reduction == "none":
        return -target_logps.sum(dim=1)
    # One reduction over all slots (fewer ops on the host: the loss itself is a few kernels).
    total = target_logps.sum()
    return -total if reduction == "sum" else total * (-1.0 / max(batch, 1))
