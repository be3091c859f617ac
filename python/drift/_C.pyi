"""Type stub of the native extension drift._C (see cpp/src/bindings.cpp).

Tensor arguments are DLPack capsules of contiguous tensors/arrays; the drivers validate
rank, dtype, device and contiguity and raise ValueError naming the argument. Each op runs on
the device its tensors live on; ``stream`` is the raw CUDA stream handle (ignored on CPU).
"""

from typing import Any, Optional

cuda_archs: str
sanitized: bool

# scratch: (P, N * ceil(M / 64)) int64 on the CUDA device, P >= 1 pairs of traceback history
# (CUDA only).
def lcs_mask(
    y: Any,
    y_prime: Any,
    y_lengths: Any,
    y_prime_lengths: Any,
    mask_y: Any,
    mask_y_prime: Any,
    lcs_length: Any,
    scratch: Optional[Any] = None,
    stream: int = 0,
) -> None: ...
def lcs_cuda_max_length() -> int: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def cuda_compiled() -> bool: ...
def cuda_device_count() -> int: ...

# Fused vocabulary losses (cpp/src/drivers.hpp documents every view). logits: (B, T, V)
# float32/bfloat16/float16/float64 with unit stride along V; "acc" = float64 for float64 logits,
# float32 otherwise; ids int64; masks bool; outputs preallocated and fully written.
def token_logps_forward(logits: Any, labels: Any, mask: Any, logps: Any, lse: Any, stream: int = 0) -> None: ...
def token_logps_backward(
    grad_logps: Any, logits: Any, labels: Any, mask: Any, lse: Any, grad_logits: Any, stream: int = 0
) -> None: ...
def oal_forward(
    logits: Any, targets: Any, logits_mask: Any, targets_mask: Any, target_logps: Any, lse: Any, argmax: Any,
    stream: int = 0,
) -> None: ...
def oal_backward(
    grad_target_logps: Any, logits: Any, targets: Any, lse: Any, argmax: Any, grad_logits: Any, stream: int = 0
) -> None: ...
