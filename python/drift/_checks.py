"""Argument checks shared by drift's public functions: every error names the argument."""

from __future__ import annotations

from typing import Any, Iterable

import torch

INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def type_name(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"torch.Tensor[{x.dtype}, {x.device}]"
    return type(x).__name__


def require_tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type_name(x)}")
    return x


def require_rank(x: torch.Tensor, name: str, rank: int, layout: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"{name}: expected a {rank}-D tensor of shape {layout}, got shape {tuple(x.shape)}")


def require_integer(x: torch.Tensor, name: str) -> None:
    if x.dtype not in INTEGER_DTYPES:
        raise TypeError(f"{name}: expected integer token ids (int32 or int64), got {x.dtype}")


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
