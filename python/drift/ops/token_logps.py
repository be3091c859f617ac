"""``drift.token_logps``: per-token log-probs of the labels, fused (no (B, T, V) log-softmax).

Two ``torch.library`` custom ops (``_fused.define``: fake (meta) kernels, one kernel for CPU and
CUDA, an autograd formula whose backward is itself an op):

- ``drift::token_logps_forward(logits, labels, mask) -> (logps, lse)`` (``lse``: the row
  log-sum-exps, 0 on masked rows; NaN for a row holding NaN or +inf, whose log-probs are NaN)
- ``drift::token_logps_backward(grad_logps, logits, labels, mask, lse) -> grad_logits``

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

SCHEMAS = (
    "(Tensor logits, Tensor labels, Tensor mask) -> (Tensor, Tensor)",
    "(Tensor grad_logps, Tensor logits, Tensor labels, Tensor mask, Tensor lse) -> Tensor",
)


def _check_forward(logits, labels, mask):
    return check_op_args("token_logps_forward", logits, (labels, "labels", "BT", "ids"), (mask, "mask", "BT", "mask"))


def _check_backward(grad_logps, logits, labels, mask, lse):
    return check_op_args(
        "token_logps_backward", logits, (grad_logps, "grad_logps", "BT", "acc"), (labels, "labels", "BT", "ids"),
        (mask, "mask", "BT", "mask"), (lse, "lse", "BT", "acc"),
    )


def _empty_outputs(logits, labels, mask):
    """The forward's outputs, allocated: logps and lse, (B, T) acc."""
    batch, seq, _ = logits.shape
    acc = acc_dtype(logits.dtype)
    return logits.new_empty((batch, seq), dtype=acc), logits.new_empty((batch, seq), dtype=acc)


def _saved(inputs, outputs):
    """What the backward takes after the gradient: (logits, labels, mask, lse)."""
    return inputs[0], inputs[1], inputs[2], outputs[1]


TOKEN_LOGPS = _fused.define("token_logps", SCHEMAS, (_check_forward, _check_backward), _empty_outputs, _saved)


def token_logps_double_backward(
    grad_grad: torch.Tensor, grad_logps: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> tuple:
    """The derivatives of ``token_logps_backward``'s output ``g * (onehot(label) - p)`` (p = softmax).

    Given ``grad_grad`` (B, T, V), the gradient on that output, returns ``(d grad_logps, d logits)``:
    ``gg[label] - <gg, p>`` (B, T) in ``grad_logps``' dtype and ``-g * p * (gg - <gg, p>)``
    (B, T, V) in the logits' dtype, both 0 on masked rows. Plain torch ops on a (B, T, V)
    softmax (double backward is rare), so they are differentiable again.
    """
    acc = acc_dtype(logits.dtype)
    rows = mask[..., None]
    p = torch.softmax(torch.where(rows, logits.to(acc), 0), dim=-1)
    gg = torch.where(rows, grad_grad.to(acc), 0)
    dot = (gg * p).sum(-1)
    picked = gg.gather(-1, torch.where(mask, labels, 0)[..., None]).squeeze(-1)
    d_grad = torch.where(mask, picked - dot, 0).to(grad_logps.dtype)
    d_logits = torch.where(rows, -grad_logps.to(acc)[..., None] * p * (gg - dot[..., None]), 0)
    return d_grad, d_logits.to(logits.dtype)


# backward inputs (grad, logits, labels, mask, lse): the second order needs all but lse
_fused.define_double_backward("token_logps", token_logps_double_backward, keep=(0, 1, 2, 3))


def token_logps(logits: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-token log-probs ``log_softmax(logits[b, t])[labels[b, t]]`` without a (B, T, V) log-softmax.

    Args:
        logits: (B, T, V) float32/bfloat16/float16/float64 on CPU or CUDA; ``logits[b, t]``
            scores ``labels[b, t]`` (the caller aligns, e.g. ``logits[:, :-1]`` with
            ``ids[:, 1:]``; such views need no copy: only the V dimension must be contiguous).
        labels: (B, T) integer ids in ``[0, V)`` at valid positions (anything elsewhere).
        mask: (B, T) bool, True on the positions to score; default: where ``labels`` is not
            the number -100 (uint8 labels cannot be -100: all are scored, 156 included).

    Returns:
        (B, T) float32 (float64 for float64 logits): the log-probs, 0 at masked positions.
        Differentiable in ``logits``: the fused backward writes
        ``grad * (onehot(label) - softmax(logits[b, t]))`` on valid rows and zeros elsewhere,
        in the logits' dtype. NaN logits give NaN log-probs in their row. Twice
        differentiable: double backward (``create_graph=True``) runs plain torch ops on a
        (B, T, V) softmax.

    Accumulation is fp32 (fp64 for fp64 logits), one online log-sum-exp per row
    (Milakov & Gimelshein 2018). On CUDA the work runs on PyTorch's current stream; the label
    range check is one small kernel and one host synchronisation.

    Raises:
        TypeError: non-tensor (or sparse, nested) arguments, unsupported dtypes, a non-bool mask.
        ValueError: wrong ranks or shapes, mixed devices, V == 0, valid labels outside [0, V).
    """
    logits = check_logits(logits)
    batch, seq, _ = logits.shape
    labels = check_ids(labels, "labels", logits, "(B, T)")
    if tuple(labels.shape) != (batch, seq):
        raise ValueError(f"labels: expected shape (B, T) = {(batch, seq)}, got {tuple(labels.shape)}")
    mask = check_mask(mask, "mask", (batch, seq), "(B, T)", logits)
    if mask is None:
        mask = not_ignored(labels)
    labels = labels.to(torch.int64).contiguous()
    return _fused.apply(TOKEN_LOGPS, unit_stride_rows(logits), labels, mask.contiguous())
