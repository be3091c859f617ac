"""``drift.lcs_mask``: batched LCS difference masks (DAM, METHOD.md section 1).

Validation, allocation and device dispatch live here; the algorithm is in
``cpp/include/drift/lcs.hpp`` and runs in the native CPU or CUDA batch drivers.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import torch

from drift import _native
from drift._checks import (
    as_int,
    int_range,
    require_compute_device,
    require_integer,
    require_rank,
    require_same_device,
    require_tensor,
    type_name,
)
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
            array, or a list of 1-D sequences (ragged; then ``y_prime`` is a list too; one
            pair is ``[[5, 8]]``, and a flat list of ids such as ``[5, 8]`` is refused).
            int32/int64 (other integer dtypes are widened).
        y_prime: generated token ids, (B, N), same kind and device as ``y``.
        y_lengths, y_prime_lengths: (B,) valid lengths (0..M, 0..N). When omitted they come
            from ``pad_id`` (the trailing run of ``pad_id`` is padding) or are the full width.
        pad_id: padding token id (an int or NumPy integer), used only for lengths not given
            explicitly. A ``pad_id`` that no id of the input's dtype can equal (e.g. ``2**32``
            with int32 ids) marks no padding: the lengths are the full widths.

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
        TypeError: non-integer ids, unsupported input kinds (sparse, nested), mixed kinds, a
            flat list of ids where a list of sequences belongs.
        ValueError: wrong rank, batch mismatch, mixed or unsupported devices, lengths out of
            range, negative ids inside the valid lengths, ids outside the int64 range,
            sequences longer than the CUDA maximum.

    Memory (CPU): besides the outputs, each pair in flight (at most one per thread, and no
    more threads than pairs) needs ``8 * ceil(m/64)`` bytes for each column of the traceback
    history (at most ``n``, one per token of ``y'`` that occurs in ``y``) and for each distinct
    token that ``y`` and ``y'`` share (at most ``min(m, n)``), plus ``O(m + n)`` for indices
    (``m``, ``n``: the pair's lengths). An id lookup table of at most
    ``min(16 MiB, 256 bytes * B * (M + N))`` per thread speeds up small ids. Nothing grows
    with the vocabulary. E.g. a 1 x 200000 ``y`` against a 1 x 1 ``y'`` needs a few MiB; two
    200000-token sequences from a 2-token vocabulary need the ~5 GB their traceback needs.

    On CUDA the work runs on PyTorch's current stream; the kernel checks lengths and ids
    itself, and the call returns after one host synchronisation that reads its verdict (so
    the masks are ready when it returns). CUDA limits: M <= 16384, N <= 2**30.
    """
    kind_y, kind_yp = _kind(y), _kind(y_prime)
    if kind_y is None or kind_yp != kind_y:
        raise _kind_mismatch(y, y_prime)
    if kind_y == "list":
        return _lcs_mask_sequences(y, y_prime, y_lengths, y_prime_lengths, pad_id)
    if kind_y == "numpy":
        yt, ypt = _numpy_ids(y, "y"), _numpy_ids(y_prime, "y_prime")
        out = _lcs_mask_tensors(yt, ypt, y_lengths, y_prime_lengths, pad_id)
        return LcsMasks(out.y.numpy(), out.y_prime.numpy(), out.lcs_length.numpy())
    return _lcs_mask_tensors(y, y_prime, y_lengths, y_prime_lengths, pad_id)


_KINDS = (("list", (list, tuple), "a list of 1-D sequences"), ("numpy", np.ndarray, "a NumPy array"),
          ("torch", torch.Tensor, "a torch.Tensor"))


def _kind(x: Any) -> Optional[str]:
    for name, types, _ in _KINDS:
        if isinstance(x, types):
            return name
    return None


def _kind_mismatch(y: Any, y_prime: Any) -> TypeError:
    """The TypeError for inputs of no or of different kinds: y sets the kind, so y_prime is named
    unless y itself is of no supported kind."""
    for name, types, described in _KINDS:
        if isinstance(y, types):
            return TypeError(f"y_prime: expected {described} like y, got {type_name(y_prime)}")
    return TypeError(f"y: expected a torch.Tensor, a NumPy array or a list of 1-D sequences, got {type_name(y)}")


def _native_order(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order (big-endian arrays are converted; torch needs it)."""
    if arr.dtype.byteorder not in ("=", "|") and arr.dtype.byteorder != _NATIVE:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


_NATIVE = "<" if np.little_endian else ">"
_INT64_MAX = 2**63 - 1


def _numpy_ids(x: np.ndarray, name: str) -> torch.Tensor:
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer token ids, got numpy {x.dtype}")
    x = _native_order(np.ascontiguousarray(x))
    if x.dtype.kind == "u" and x.dtype.itemsize >= 8:
        if x.size and int(x.max()) > _INT64_MAX:
            raise ValueError(f"{name}: id {int(x.max())} outside the int64 range")
        x = x.astype(np.int64)
    elif x.dtype.kind == "u":
        x = x.astype(np.int64)
    return torch.from_numpy(x)


def _sequence_ids(s: Any, name: str) -> np.ndarray:
    """A 1-D (or deeper, checked by the caller) int64 array from a list/tuple/array of ids."""
    try:
        arr = np.asarray(s) if not isinstance(s, np.ndarray) else s
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{name}: expected a 1-D sequence of integer token ids, got {type_name(s)}") from exc
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return _numpy_ids(arr, name).numpy()
    if arr.dtype.kind in "Of" and not isinstance(s, np.ndarray):
        # Python ints beyond int64 (np.asarray gives object or float64 for them): name the id.
        obj = np.asarray(s, dtype=object)
        flat = list(np.ravel(obj))
        for v in flat:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                break
            if not -(2**63) <= int(v) <= _INT64_MAX:
                raise ValueError(f"{name}: id {int(v)} outside the int64 range")
        else:
            return np.asarray(flat, dtype=np.int64).reshape(obj.shape)
    raise TypeError(f"{name}: expected integer token ids, got {arr.dtype}")


def _ragged(seqs: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(seqs, (list, tuple)):
        raise TypeError(f"{name}: expected a list of 1-D sequences like the other argument, got {type_name(seqs)}")
    rows = []
    for k, s in enumerate(seqs):
        if isinstance(s, torch.Tensor):
            row = require_tensor(s, f"{name}[{k}]").detach().cpu()
        else:
            row = torch.from_numpy(_sequence_ids(s, f"{name}[{k}]"))
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


def _is_scalar_id(x: Any) -> bool:
    """An integer scalar where a sequence of ids belongs: an int, a NumPy integer, a 0-D array or tensor."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return x.ndim == 0
    return isinstance(x, (int, np.integer))


def _id_text(x: Any) -> str:
    return str(x.item() if hasattr(x, "item") else x)


def _nested_form(seqs: Any, limit: int = 8) -> str:
    """``[[5, 8]]`` for the flat ``[5, 8]`` (at most ``limit`` ids shown)."""
    ids = [_id_text(v) for v in list(seqs)[:limit]]
    return "[[" + ", ".join(ids) + (", ..." if len(seqs) > limit else "") + "]]"


def _refuse_flat(y: Any, y_prime: Any) -> None:
    """A TypeError for a flat list of ids: ``lcs_mask([5, 8], [5, 2])`` would read two pairs of one
    token each, so the caller is shown the nested form of one pair instead."""
    flat = [name for name, seqs in (("y", y), ("y_prime", y_prime)) if any(_is_scalar_id(s) for s in seqs)]
    if not flat:
        return
    name = flat[0]
    seqs = y if name == "y" else y_prime
    if all(_is_scalar_id(s) for s in y) and all(_is_scalar_id(s) for s in y_prime):
        hint = f"for one pair of sequences write lcs_mask({_nested_form(y)}, {_nested_form(y_prime)})"
    elif all(_is_scalar_id(s) for s in seqs):
        hint = f"for one sequence write {name}={_nested_form(seqs)}"
    else:
        k = next(k for k, s in enumerate(seqs) if _is_scalar_id(s))
        raise TypeError(f"{name}[{k}]: expected a 1-D sequence of token ids, got the single id {_id_text(seqs[k])}")
    raise TypeError(f"{name}: expected a list of 1-D sequences (one per pair), got a flat list of ids; {hint}")


def _lcs_mask_sequences(y, y_prime, y_lengths, y_prime_lengths, pad_id) -> LcsMasks:
    _refuse_flat(y, y_prime)
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
        lo, hi = int_range(ids.dtype)
        if pad_id is None or not lo <= pad_id <= hi:  # a pad_id no id can equal: no padding
            return torch.full((batch,), width, dtype=torch.int64, device=ids.device)
        positions = torch.arange(1, width + 1, device=ids.device, dtype=torch.int64)
        return ((ids != pad_id).to(torch.int64) * positions).amax(dim=1) if width else torch.zeros(
            batch, dtype=torch.int64, device=ids.device
        )
    if isinstance(given, torch.Tensor):
        require_tensor(given, name)
    else:
        try:
            arr = _native_order(np.asarray(given))
            if arr.size == 0 and arr.dtype.kind not in "iu":
                arr = arr.astype(np.int64)  # [] is an empty list of lengths (B = 0)
            given = torch.as_tensor(arr)
        except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
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
        require_tensor(x, name)
        require_integer(x, name)
        require_rank(x, name, 2, layout)
    require_same_device(y_prime, "y_prime", y, "y")
    require_compute_device(y, "y")
    if y.shape[0] != y_prime.shape[0]:
        raise ValueError(f"y_prime: batch size {y_prime.shape[0]} differs from y's {y.shape[0]}")
    if pad_id is not None:
        pad_id = as_int(pad_id, "pad_id")
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
        _C.lcs_mask(cap(y), cap(y_prime), cap(y_len), cap(yp_len), cap(mask_y), cap(mask_yp), cap(lcs_length))
    elif y.device.type == "cuda":
        if not _C.cuda_compiled():
            raise RuntimeError("y: is a CUDA tensor but drift was built without CUDA kernels; reinstall with nvcc on PATH")
        if m > _C.lcs_cuda_max_length():
            raise ValueError(f"y: length {m} exceeds the CUDA maximum {_C.lcs_cuda_max_length()}")
        words = max(1, (m + 63) // 64)
        per_pair = max(1, n) * words
        pairs = max(1, min(batch, CUDA_SCRATCH_BYTES // (8 * per_pair)))
        scratch = torch.empty((pairs, per_pair), dtype=torch.int64, device=y.device)
        _C.lcs_mask(
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
