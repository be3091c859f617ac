"""Checks and conventions shared by the fused vocabulary ops (``oal``, ``token_logps``)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from drift._checks import (
    int_range,
    require_compute_device,
    require_dtype,
    require_integer,
    require_rank,
    require_same_device,
    require_shape,
    require_tensor,
)
from drift._native import _C

#: Logit dtypes the kernels read; accumulation is fp32 (fp64 for fp64 logits).
LOGITS_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
#: Label/target value that marks padding when no explicit mask is given (as in cross-entropy).
IGNORE_INDEX = -100


def not_ignored(ids: torch.Tensor) -> torch.Tensor:
    """The default mask of integer ``ids``: True where the id is not the number ``IGNORE_INDEX``.

    Compared as numbers, never through a wrapped -100: torch casts the scalar to the tensor's
    dtype, so ``uint8_ids != -100`` would drop the id 156. A dtype that cannot hold -100
    (uint8) has no ignore index: every id is kept.
    """
    lo, hi = int_range(ids.dtype)
    if lo <= IGNORE_INDEX <= hi:
        return ids != IGNORE_INDEX
    return torch.ones_like(ids, dtype=torch.bool)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the kernels' fp accumulators and per-token outputs for ``dtype`` logits."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_logits(logits: Any) -> torch.Tensor:
    """A (B, T, V) floating tensor on CPU or CUDA with V >= 1; raises naming ``logits``."""
    logits = require_tensor(logits, "logits")
    require_rank(logits, "logits", 3, "(B, T, V)")
    require_dtype(logits, "logits", LOGITS_DTYPES)
    require_compute_device(logits, "logits")
    if logits.shape[2] < 1:
        raise ValueError(f"logits: the vocabulary dimension V must be >= 1, got shape {tuple(logits.shape)}")
    return logits


def check_ids(ids: Any, name: str, logits: torch.Tensor, width_layout: str) -> torch.Tensor:
    """(B, N) integer ids on ``logits``' device, batch matching ``logits``."""
    ids = require_tensor(ids, name)
    require_integer(ids, name)
    require_rank(ids, name, 2, width_layout)
    require_same_device(ids, name, logits, "logits")
    if ids.shape[0] != logits.shape[0]:
        raise ValueError(f"{name}: batch size {ids.shape[0]} differs from logits' {logits.shape[0]}")
    return ids


def check_mask(mask: Optional[Any], name: str, shape: tuple, layout: str, ref: torch.Tensor) -> Optional[torch.Tensor]:
    """A bool mask of ``shape`` on ``ref``'s device, or None."""
    if mask is None:
        return None
    mask = require_tensor(mask, name)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name}: expected a bool tensor, got {mask.dtype}")
    require_shape(mask, name, shape, layout)
    require_same_device(mask, name, ref, "logits")
    return mask


def unit_stride_rows(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` itself when V has unit stride (row strides are free), else a contiguous copy.

    Empty logits are returned as they are: nothing is read, whatever their strides.
    """
    if logits.numel() and logits.shape[2] > 1 and logits.stride(2) != 1:
        return logits.contiguous()
    return logits


def check_op_args(op: str, logits: Any, *specs: tuple) -> tuple:
    """Checks the arguments of a direct ``torch.ops.drift.<op>`` call (also run by the fake kernels).

    ``logits``: a dense (B, T, V) floating tensor. Each spec is ``(tensor, name, dims, kind)``:
    ``dims`` a string of the letters B, T, V, M (M: the width of the first spec that has it),
    ``kind`` one of ``"ids"`` (int64), ``"mask"`` (bool), ``"acc"`` (the accumulator dtype of
    ``logits``). Returns ``(B, T, V)``. Raises TypeError/ValueError naming the argument and
    ``op``, instead of an IndexError from a shape computation.
    """
    logits = require_tensor(logits, f"{op}: logits")
    require_rank(logits, f"{op}: logits", 3, "(B, T, V)")
    require_dtype(logits, f"{op}: logits", LOGITS_DTYPES)
    sizes = dict(zip("BTV", logits.shape))
    dtypes = {"ids": (torch.int64,), "mask": (torch.bool,), "acc": (acc_dtype(logits.dtype),)}
    for x, name, dims, kind in specs:
        label = f"{op}: {name}"
        x = require_tensor(x, label)
        layout = "(" + ", ".join(dims) + ")"
        require_rank(x, label, len(dims), layout)
        if "M" in dims and "M" not in sizes:
            sizes["M"] = x.shape[dims.index("M")]
        require_shape(x, label, tuple(sizes[d] for d in dims), layout)
        require_dtype(x, label, dtypes[kind])
        require_same_device(x, label, logits, "logits")
    return tuple(logits.shape)


def require_cuda_kernels(name: str) -> None:
    if not _C.cuda_compiled():
        raise RuntimeError(f"{name}: is a CUDA tensor but drift was built without CUDA kernels; reinstall with nvcc on PATH")
