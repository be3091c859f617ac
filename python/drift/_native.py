"""Loading of the native extension ``drift._C`` and DLPack hand-off helpers.

The extension never links libtorch: tensors and arrays cross the boundary as DLPack
capsules, which the C++ side parses into checked views (``cpp/src/tensor_view.hpp``).
"""

from __future__ import annotations

from typing import Any

try:
    from drift import _C  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "drift's native extension drift._C is missing or failed to load; "
        "reinstall with `pip install .` from the repository root"
    ) from exc


def capsule(x: Any) -> Any:
    """Return a DLPack capsule for a contiguous torch tensor or NumPy array (no copy)."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.__dlpack__()
    import torch

    return torch.utils.dlpack.to_dlpack(x)


def cuda_stream(device: Any) -> int:
    """The raw handle of PyTorch's current CUDA stream on ``device``.

    The native CUDA entry points make the tensors' device current themselves (and restore the
    caller's), so callers need no ``torch.cuda.device`` context around them.
    """
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


def build_info() -> dict:
    """What the native extension was built with.

    Returns a dict with ``cuda_compiled`` (bool: CUDA kernels compiled in), ``cuda_archs``
    (str, e.g. ``"80,86,89,90"``), ``sanitized`` (bool: ASan/UBSan build) and
    ``num_threads`` (int: CPU threads the batch drivers use).
    """
    return {
        "cuda_compiled": bool(_C.cuda_compiled()),
        "cuda_archs": str(_C.cuda_archs),
        "sanitized": bool(_C.sanitized),
        "num_threads": int(_C.get_num_threads()),
    }


def cuda_available() -> bool:
    """True when drift's CUDA kernels are compiled in and a CUDA device can run them now."""
    return bool(_C.cuda_compiled()) and _C.cuda_device_count() > 0


#: The most CPU threads drift's batch drivers use (cpp/src/drivers.hpp, kMaxThreads).
MAX_THREADS = 256


def set_num_threads(n: int) -> None:
    """Set the CPU threads used by drift's batch drivers (``0`` = all hardware threads).

    ``n``: an int (or NumPy integer) >= 0. Values above :data:`MAX_THREADS` (256) are capped to
    it, and so is the hardware count; a call never starts more threads than it has pairs or
    rows of work, and when the system cannot create a thread the call goes on with fewer.
    Raises TypeError for a non-integer ``n``, ValueError for a negative one.
    """
    from drift._checks import as_int

    n = as_int(n, "n")
    if n < 0:
        raise ValueError(f"n: expected >= 0 (0 = all cores), got {n}")
    _C.set_num_threads(min(n, MAX_THREADS))


def get_num_threads() -> int:
    """The CPU threads drift's batch drivers use."""
    return int(_C.get_num_threads())
