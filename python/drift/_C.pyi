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

# Fused vocabulary losses (cpp/src/drivers.hpp documents every view). logits: (B, T, V)
# float32/bfloat16/float16/float64 with unit stride along V; "acc" = float64 for float64 logits,
# float32 otherwise; ids int64; masks bool; outputs preallocated and fully written.
def token_logps_forward_cpu(logits: Any, labels: Any, mask: Any, logps: Any, lse: Any) -> None: ...
def token_logps_forward_cuda(logits: Any, labels: Any, mask: Any, logps: Any, lse: Any, stream: int) -> None: ...
def token_logps_backward_cpu(
    grad_logps: Any, logits: Any, labels: Any, mask: Any, lse: Any, grad_logits: Any
) -> None: ...
def token_logps_backward_cuda(
    grad_logps: Any, logits: Any, labels: Any, mask: Any, lse: Any, grad_logits: Any, stream: int
) -> None: ...
def oal_forward_cpu(
    logits: Any, targets: Any, logits_mask: Any, targets_mask: Any, target_logps: Any, lse: Any, argmax: Any
) -> None: ...
def oal_forward_cuda(
    logits: Any,
    targets: Any,
    logits_mask: Any,
    targets_mask: Any,
    target_logps: Any,
    lse: Any,
    argmax: Any,
    stream: int,
) -> None: ...
def oal_backward_cpu(
    grad_target_logps: Any, logits: Any, targets: Any, lse: Any, argmax: Any, grad_logits: Any
) -> None: ...
def oal_backward_cuda(
    grad_target_logps: Any, logits: Any, targets: Any, lse: Any, argmax: Any, grad_logits: Any, stream: int
) -> None: ...
