"""Argument checks shared by drift's public functions: every error names the argument."""

from __future__ import annotations

import numbers
import operator
from typing import Any, Iterable, Optional

import torch

INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
INTEGER_DTYPE_NAMES = "int8, int16, int32, int64 or uint8"


def type_name(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"torch.Tensor[{x.dtype}, {x.device}]"
    return type(x).__name__


def require_tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` itself when it is a dense (strided, not nested) torch tensor; else a TypeError."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type_name(x)}")
    if x.is_nested:
        raise TypeError(f"{name}: expected a dense torch.Tensor, got a nested tensor; pad it (and pass a mask or lengths)")
    if x.layout != torch.strided:
        raise TypeError(f"{name}: expected a dense (strided) torch.Tensor, got layout {x.layout}; call .to_dense()")
    return x


def require_rank(x: torch.Tensor, name: str, rank: int, layout: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"{name}: expected a {rank}-D tensor of shape {layout}, got shape {tuple(x.shape)}")


def require_integer(x: torch.Tensor, name: str) -> None:
    if x.dtype not in INTEGER_DTYPES:
        raise TypeError(f"{name}: expected integer token ids ({INTEGER_DTYPE_NAMES}), got {x.dtype}")


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """Any integer dtype (not floating, complex or bool); :func:`require_integer` is the kernels' narrower set."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def require_bool(x: torch.Tensor, name: str) -> None:
    if x.dtype != torch.bool:
        raise TypeError(f"{name}: expected a bool mask, got {x.dtype}")


def require_floating(x: torch.Tensor, name: str, what: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor of {what}, got {x.dtype}")


def require_dtype(x: torch.Tensor, name: str, dtypes: Iterable[torch.dtype]) -> None:
    dtypes = tuple(dtypes)
    if x.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name}: expected dtype in ({allowed}), got {str(x.dtype).replace('torch.', '')}")


def require_same_device(x: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name}: is on {x.device} but {ref_name} is on {ref.device}; put them on one device")


def require_shape(x: torch.Tensor, name: str, shape: tuple, layout: str) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {layout} = {tuple(shape)}, got {tuple(x.shape)}")


def require_compute_device(x: torch.Tensor, name: str) -> None:
    """drift's kernels run on CPU and CUDA only (meta, mps, xla tensors are refused)."""
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: unsupported device {x.device}; expected cpu or cuda")


def as_int(x: Any, name: str) -> int:
    """A Python int from an int-like ``x`` (int, NumPy integer, ...; not bool), else a TypeError."""
    if isinstance(x, bool) or str(getattr(x, "dtype", "")) in ("bool", "torch.bool"):
        raise TypeError(f"{name}: expected an int, got {type(x).__name__}")
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(x).__name__}") from None


def as_real(x: Any, name: str) -> float:
    """A Python float from a real number ``x`` (int, float, NumPy scalar; not bool), else a TypeError."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or type(x).__name__ == "bool_":
        raise TypeError(f"{name}: expected a float, got {type(x).__name__}")
    return float(x)


def int_range(dtype: torch.dtype) -> Optional[tuple]:
    """(min, max) of an integer torch dtype, or None for other dtypes."""
    if not is_integer_dtype(dtype):
        return None
    info = torch.iinfo(dtype)
    return int(info.min), int(info.max)
