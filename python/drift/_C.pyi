"""Type stub of the native extension drift._C (see cpp/src/bindings.cpp).

Tensor arguments are DLPack capsules of contiguous tensors/arrays; the drivers validate
rank, dtype, device and contiguity and raise ValueError naming the argument.
"""

from typing import Any

cuda_archs: str
sanitized: bool

def lcs_mask_cpu(
    y: Any, y_prime: Any, y_lengths: Any, y_prime_lengths: Any, mask_y: Any, mask_y_prime: Any, lcs_length: Any
) -> None: ...
def lcs_mask_cuda(
    y: Any,
    y_prime: Any,
    y_lengths: Any,
    y_prime_lengths: Any,
    mask_y: Any,
    mask_y_prime: Any,
    lcs_length: Any,
    scratch: Any,
    stream: int,
) -> None: ...
def lcs_cuda_max_length() -> int: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def cuda_compiled() -> bool: ...
def cuda_device_count() -> int: ...
