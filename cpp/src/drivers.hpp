// Entry points of the batch drivers (CPU in cpu/, CUDA in cuda/), called by bindings.cpp.
// Every driver validates the views it receives (the validate_* functions below) before any access.
#pragma once

#include <cstdint>

#include "tensor_view.hpp"

namespace drift {

// LCS masks for a right-padded batch. y: (B, M) int32/int64, y_prime: (B, N) int32/int64,
// y_len / y_prime_len: (B,) int64, mask_y: (B, M) bool, mask_y_prime: (B, N) bool,
// lcs_len: (B,) int64. Masks are fully written (padding -> false).
struct LcsArgs {
  TensorView y, y_prime, y_len, y_prime_len, mask_y, mask_y_prime, lcs_len;
};

// Checks shapes, dtypes, devices and contiguity of every view; throws std::invalid_argument.
void validate_lcs_args(const LcsArgs& args, DeviceKind device);

void lcs_cpu(const LcsArgs& args);
// scratch: (P, N * ceil(M/64)) int64 on the same device, P >= 1 pairs of traceback history.
void lcs_cuda(const LcsArgs& args, const TensorView& scratch, std::uintptr_t stream);
int64_t lcs_cuda_max_length();

// Fused vocabulary losses (drift/oal.hpp). logits: (B, T, V) float32/bfloat16/float16/float64
// with unit stride along V (any non-negative strides along B and T); `acc` below means float64
// for float64 logits and float32 otherwise. Masks are bool, ids int64, every other view is
// contiguous. Outputs are fully written.
//
// token log-probs: labels (B, T), mask (B, T) -> logps (B, T) acc (0 where masked),
// lse (B, T) acc (log-sum-exp of each valid row, 0 where masked).
struct TokenLogpsForwardArgs {
  TensorView logits, labels, mask, logps, lse;
};
// grad_logits (B, T, V) logits dtype, contiguous = grad_logps * (onehot(label) - softmax) on
// valid rows, 0 elsewhere. grad_logps: (B, T) acc.
struct TokenLogpsBackwardArgs {
  TensorView grad_logps, logits, labels, mask, lse, grad_logits;
};
// OAL: targets (B, M), logits_mask (B, T), targets_mask (B, M) -> target_logps (B, M) acc:
// max over valid t of log softmax(logits[b, t])[targets[b, m]] for the first occurrence of each
// distinct valid id (0 for padding, duplicates, rows without a valid position); argmax (B, M)
// int64: the position of that max (ties: lowest), -1 where not counted; lse (B, T) acc.
struct OalForwardArgs {
  TensorView logits, targets, logits_mask, targets_mask, target_logps, lse, argmax;
};
// grad_logits (B, T, V) logits dtype, contiguous = sum over m with argmax[b, m] == t of
// grad_target_logps[b, m] * (onehot(targets[b, m]) - softmax(logits[b, t])); 0 on other rows.
struct OalBackwardArgs {
  TensorView grad_target_logps, logits, targets, lse, argmax, grad_logits;
};

// Check every view (and, on CPU, the ids against V); throw std::invalid_argument naming it.
void validate_token_logps_forward(const TokenLogpsForwardArgs& args, DeviceKind device);
void validate_token_logps_backward(const TokenLogpsBackwardArgs& args, DeviceKind device);
void validate_oal_forward(const OalForwardArgs& args, DeviceKind device);
void validate_oal_backward(const OalBackwardArgs& args, DeviceKind device);

void token_logps_forward_cpu(const TokenLogpsForwardArgs& args);
void token_logps_backward_cpu(const TokenLogpsBackwardArgs& args);
void oal_forward_cpu(const OalForwardArgs& args);
void oal_backward_cpu(const OalBackwardArgs& args);
// CUDA launchers: run on `stream`, allocate nothing, never synchronise. Ids out of [0, V)
// are not read (the Python layer rejects them before launching).
void token_logps_forward_cuda(const TokenLogpsForwardArgs& args, std::uintptr_t stream);
void token_logps_backward_cuda(const TokenLogpsBackwardArgs& args, std::uintptr_t stream);
void oal_forward_cuda(const OalForwardArgs& args, std::uintptr_t stream);
void oal_backward_cuda(const OalBackwardArgs& args, std::uintptr_t stream);

// CPU thread count for every batch driver; 0 means all hardware threads. Requests above
// kMaxThreads are capped to it (so is the hardware count); a driver never starts more
// threads than it has items of work (pairs, rows). Negative n throws std::invalid_argument.
constexpr int kMaxThreads = 256;
int get_num_threads();
void set_num_threads(int64_t n);

bool cuda_compiled();
int cuda_device_count();  // 0 when no driver / no device

}  // namespace drift
