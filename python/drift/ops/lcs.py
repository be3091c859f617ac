"""``drift.lcs_mask``: batched LCS difference masks (DAM, METHOD.md section 1).

Validation, allocation and device dispatch live here; the algorithm is in
``cpp/include/drift/lcs.hpp`` and runs in the native CPU or CUDA batch drivers.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import torch

from drift import _native
from drift._checks import require_integer, require_rank, require_same_device, type_name
from drift._native import _C

#: Scratch budget for the CUDA traceback history; larger batches run in chunks.
CUDA_SCRATCH_BYTES = 256 << 20


class LcsMasks(NamedTuple):
    """Result of :func:`lcs_mask`.

    ``y`` (B, M) and ``y_prime`` (B, N): boolean masks, True on difference tokens (outside the
    chosen LCS), False on LCS tokens and padding. ``lcs_length`` (B,): int64 LCS lengths.
    """

    y: Any
    y_prime: Any
    lcs_length: Any


def lcs_mask(
    y: Any,
    y_prime: Any,
    y_lengths: Any = None,
    y_prime_lengths: Any = None,
    *,
    pad_id: Optional[int] = None,
) -> LcsMasks:
    """Masks of the tokens of ``y`` and ``y_prime`` outside one longest common subsequence.

    Args:
        y: ground-truth token ids, (B, M), right-padded; a torch tensor (CPU or CUDA), a NumPy
            array, or a list of 1-D sequences (ragged; then ``y_prime`` is a list too).
            int32/int64 (other integer dtypes are widened).
        y_prime: generated token ids, (B, N), same kind and device as ``y``.
        y_lengths, y_prime_lengths: (B,) valid lengths (0..M, 0..N). When omitted they come
            from ``pad_id`` (the trailing run of ``pad_id`` is padding) or are the full width.
        pad_id: padding token id, used only for lengths not given explicitly.

    Returns:
        :class:`LcsMasks` ``(y, y_prime, lcs_length)``: bool masks of the input shapes, True on
        difference tokens (the tokens DAM trains on), False on LCS tokens and on padding;
        ``lcs_length`` (B,) int64. Torch inputs give torch outputs on the input's device,
        NumPy inputs NumPy outputs, lists give lists of 1-D NumPy bool masks.

    Tie-break (identical on CPU, CUDA and :func:`drift.reference.lcs_mask`): walk the DP
    table back from the ends of both sequences; when the two current tokens are equal they
    are matched; otherwise the current token of ``y`` is dropped (marked a difference) if the
    LCS length stays the same without it, else the current token of ``y_prime`` is dropped.
    Example: ``y = [1, 2]``, ``y' = [2, 1]`` keeps the ``1`` of both (masks ``[F, T]``,
    ``[T, F]``).

    Raises:
        TypeError: non-integer ids, unsupported input kinds, mixed kinds.
        ValueError: wrong rank, batch mismatch, mixed devices, lengths out of range, negative
            ids inside the valid lengths, sequences longer than the CUDA maximum.

    On CUDA the work runs on PyTorch's current stream; the kernel checks lengths and ids
    itself, and the call returns after one host synchronisation that reads its verdict (so
    the masks are ready when it returns). CUDA limits: M <= 16384, N <= 2**30.
    """
    if isinstance(y, (list, tuple)) or isinstance(y_prime, (list, tuple)):
        return _lcs_mask_sequences(y, y_prime, y_lengths, y_prime_lengths, pad_id)
    if isinstance(y, np.ndarray) or isinstance(y_prime, np.ndarray):
        if not (isinstance(y, np.ndarray) and isinstance(y_prime, np.ndarray)):
            raise TypeError(f"y_prime: expected a NumPy array like y, got {type_name(y_prime)} and {type_name(y)}")
        yt, ypt = _numpy_ids(y, "y"), _numpy_ids(y_prime, "y_prime")
        yl = None if y_lengths is None else torch.as_tensor(np.asarray(y_lengths))
        ypl = None if y_prime_lengths is None else torch.as_tensor(np.asarray(y_prime_lengths))
        out = _lcs_mask_tensors(yt, ypt, yl, ypl, pad_id)
        return LcsMasks(out.y.numpy(), out.y_prime.numpy(), out.lcs_length.numpy())
    if isinstance(y, torch.Tensor) or isinstance(y_prime, torch.Tensor):
        if not (isinstance(y, torch.Tensor) and isinstance(y_prime, torch.Tensor)):
            raise TypeError(f"y_prime: expected a torch.Tensor like y, got {type_name(y_prime)} and {type_name(y)}")
        return _lcs_mask_tensors(y, y_prime, y_lengths, y_prime_lengths, pad_id)
    raise TypeError(
        f"y: expected a torch.Tensor, a NumPy array or a list of 1-D sequences, got {type_name(y)}"
    )


def _numpy_ids(x: np.ndarray, name: str) -> torch.Tensor:
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer token ids (int32 or int64), got numpy {x.dtype}")
    if x.dtype.kind == "u" and x.dtype.itemsize >= 8:
        raise TypeError(f"{name}: expected integer token ids (int32 or int64), got numpy {x.dtype}")
    return torch.from_numpy(np.ascontiguousarray(x).astype(np.int64, copy=False) if x.dtype.kind == "u" else np.ascontiguousarray(x))


def _ragged(seqs: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(seqs, (list, tuple)):
        raise TypeError(f"{name}: expected a list of 1-D sequences like the other argument, got {type_name(seqs)}")
    rows = []
    for k, s in enumerate(seqs):
        if isinstance(s, torch.Tensor):
            row = s.detach().cpu()
        else:
            arr = np.asarray(s)
            if arr.size == 0:
                arr = arr.astype(np.int64)
            if arr.dtype.kind not in "iu":
                raise TypeError(f"{name}[{k}]: expected integer token ids, got {arr.dtype}")
            row = torch.from_numpy(arr.astype(np.int64))
        if row.dim() != 1:
            raise ValueError(f"{name}[{k}]: expected a 1-D sequence, got shape {tuple(row.shape)}")
        require_integer(row, f"{name}[{k}]")
        rows.append(row.to(torch.int64))
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    width = int(lengths.max()) if rows else 0
    ids = torch.zeros((len(rows), width), dtype=torch.int64)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = r
    return ids, lengths


def _lcs_mask_sequences(y, y_prime, y_lengths, y_prime_lengths, pad_id) -> LcsMasks:
    if y_lengths is not None or y_prime_lengths is not None:
        raise ValueError("y_lengths/y_prime_lengths: not used with lists of sequences (their lengths are implicit)")
    if pad_id is not None:
        raise ValueError("pad_id: not used with lists of sequences (they are not padded)")
    yt, yl = _ragged(y, "y")
    ypt, ypl = _ragged(y_prime, "y_prime")
    out = _lcs_mask_tensors(yt, ypt, yl, ypl, None)
    masks_y = [out.y[k, : int(yl[k])].numpy() for k in range(len(yl))]
    masks_yp = [out.y_prime[k, : int(ypl[k])].numpy() for k in range(len(ypl))]
    return LcsMasks(masks_y, masks_yp, out.lcs_length.numpy())


def _lengths(
    given: Any, ids: torch.Tensor, name: str, ids_name: str, pad_id: Optional[int], check_range: bool
) -> torch.Tensor:
    batch, width = ids.shape
    if given is None:
        if pad_id is None:
            return torch.full((batch,), width, dtype=torch.int64, device=ids.device)
        positions = torch.arange(1, width + 1, device=ids.device, dtype=torch.int64)
        return ((ids != pad_id).to(torch.int64) * positions).amax(dim=1) if width else torch.zeros(
            batch, dtype=torch.int64, device=ids.device
        )
    if not isinstance(given, torch.Tensor):
        try:
            given = torch.as_tensor(np.asarray(given))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected a (B,) integer tensor, array or list, got {type_name(given)}") from exc
    if given.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        raise TypeError(f"{name}: expected integer lengths, got {given.dtype}")
    if given.dim() != 1 or given.shape[0] != batch:
        raise ValueError(f"{name}: expected shape (B,) = ({batch},), got {tuple(given.shape)}")
    require_same_device(given, name, ids, ids_name)
    given = given.to(torch.int64).contiguous()
    if check_range and batch and (bool((given < 0).any()) or bool((given > width).any())):
        bad = given[(given < 0) | (given > width)][0].item()
        raise ValueError(f"{name}: lengths must lie in 0..{width} (the width of {ids_name}), found {bad}")
    return given


def _lcs_mask_tensors(y, y_prime, y_lengths, y_prime_lengths, pad_id) -> LcsMasks:
    for x, name, layout in ((y, "y", "(B, M)"), (y_prime, "y_prime", "(B, N)")):
        require_integer(x, name)
        require_rank(x, name, 2, layout)
    require_same_device(y_prime, "y_prime", y, "y")
    if y.shape[0] != y_prime.shape[0]:
        raise ValueError(f"y_prime: batch size {y_prime.shape[0]} differs from y's {y.shape[0]}")
    if pad_id is not None and (isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer))):
        raise TypeError(f"pad_id: expected an int, got {type(pad_id).__name__}")
    if y.dtype not in (torch.int32, torch.int64):
        y = y.to(torch.int64)
    if y_prime.dtype not in (torch.int32, torch.int64):
        y_prime = y_prime.to(torch.int64)
    y, y_prime = y.contiguous(), y_prime.contiguous()
    # On CPU the native driver range-checks lengths and ids itself in one pass (cheaper than
    # torch reductions, whose OpenMP workers would also compete with the driver's threads).
    # The CUDA kernel checks them too, per pair, and flags an invalid pair with length -1: one
    # host synchronisation after the kernel instead of several before it.
    y_len = _lengths(y_lengths, y, "y_lengths", "y", pad_id, False)
    yp_len = _lengths(y_prime_lengths, y_prime, "y_prime_lengths", "y_prime", pad_id, False)

    batch, m = y.shape
    n = y_prime.shape[1]
    mask_y = torch.empty((batch, m), dtype=torch.bool, device=y.device)
    mask_yp = torch.empty((batch, n), dtype=torch.bool, device=y.device)
    lcs_length = torch.empty((batch,), dtype=torch.int64, device=y.device)
    cap = _native.capsule
    if y.device.type == "cpu":
        _C.lcs_mask_cpu(cap(y), cap(y_prime), cap(y_len), cap(yp_len), cap(mask_y), cap(mask_yp), cap(lcs_length))
    elif y.device.type == "cuda":
        if not _C.cuda_compiled():
            raise RuntimeError("y: is a CUDA tensor but drift was built without CUDA kernels; reinstall with nvcc on PATH")
        if m > _C.lcs_cuda_max_length():
            raise ValueError(f"y: length {m} exceeds the CUDA maximum {_C.lcs_cuda_max_length()}")
        words = max(1, (m + 63) // 64)
        per_pair = max(1, n) * words
        pairs = max(1, min(batch, CUDA_SCRATCH_BYTES // (8 * per_pair)))
        scratch = torch.empty((pairs, per_pair), dtype=torch.int64, device=y.device)
        _C.lcs_mask_cuda(
            cap(y), cap(y_prime), cap(y_len), cap(yp_len), cap(mask_y), cap(mask_yp), cap(lcs_length),
            cap(scratch), _native.cuda_stream(y.device),
        )
        if bool((lcs_length < 0).any()):
            # Rare path: the checks one by one, for the error that names the argument.
            _lengths(y_lengths, y, "y_lengths", "y", pad_id, True)
            _lengths(y_prime_lengths, y_prime, "y_prime_lengths", "y_prime", pad_id, True)
            _check_nonnegative(y, y_len, "y")
            _check_nonnegative(y_prime, yp_len, "y_prime")
            raise ValueError("y, y_prime: the CUDA kernel found invalid lengths or negative ids")
    else:
        raise ValueError(f"y: unsupported device {y.device}; expected cpu or cuda")
    return LcsMasks(mask_y, mask_yp, lcs_length)


def _check_nonnegative(ids: torch.Tensor, lengths: torch.Tensor, name: str) -> None:
    if ids.numel() == 0:
        return
    valid = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
    if bool(((ids < 0) & valid).any()):
        raise ValueError(
            f"{name}: negative token ids inside the valid lengths; pass pad_id or lengths to mark padding"
        )
