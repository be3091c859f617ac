"""drift: DRIFT self-play fine-tuning for causal language models.

Public API:

- :func:`lcs_mask` - batched longest-common-subsequence masks (DAM, METHOD.md section 1);
- :func:`build_info`, :func:`cuda_available`, :func:`set_num_threads`, :func:`get_num_threads`;
- :mod:`drift.reference` - plain-Python/PyTorch reference implementations for tests.
"""

from drift._native import build_info, cuda_available, get_num_threads, set_num_threads
from drift.ops.lcs import LcsMasks, lcs_mask
from drift import reference

__version__ = "0.1.0"

__all__ = [
    "LcsMasks",
    "build_info",
    "cuda_available",
    "get_num_threads",
    "lcs_mask",
    "reference",
    "set_num_threads",
]
