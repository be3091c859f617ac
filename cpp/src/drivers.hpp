// Entry points of the batch drivers (CPU in cpu/, CUDA in cuda/), called by bindings.cpp.
// Every driver validates the views it receives (validate.hpp) before any access.
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

void lcs_cpu(const LcsArgs& args);
// scratch: (P, N * ceil(M/64)) int64 on the same device, P >= 1 pairs of traceback history.
void lcs_cuda(const LcsArgs& args, const TensorView& scratch, std::uintptr_t stream);
int64_t lcs_cuda_max_length();

// Fused vocabulary losses (drift/vocab.hpp). logits: (B, T, V) float32/bfloat16/float16/float64
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

// The drivers of the four vocabulary ops, one template per device for Args = each struct
// above: run_cpu in cpu/vocab.cpp; run_cuda in cuda/vocab.cu (stubs.cpp without CUDA) runs on
// `stream`, allocates nothing and never synchronises, except for the one host synchronisation
// of the forward's id check (ids out of [0, V) are rejected before any kernel reads them).
template <typename Args> void run_cpu(const Args& args);
template <typename Args> void run_cuda(const Args& args, std::uintptr_t stream);

// The entry of a vocabulary op: the driver of the device its logits live on (`stream`: the CUDA
// stream handle, unused on CPU).
template <typename Args> void run(const Args& args, std::uintptr_t stream) {
  if (args.logits.device == DeviceKind::kCUDA) run_cuda(args, stream);
  else run_cpu(args);
}

// CPU thread count for every batch driver; 0 means all hardware threads. Requests above
// kMaxThreads are capped to it (so is the hardware count); a driver never starts more
// threads than it has items of work (pairs, rows). Negative n throws std::invalid_argument.
constexpr int kMaxThreads = 256;
int get_num_threads();
void set_num_threads(int64_t n);

bool cuda_compiled();
int cuda_device_count();  // 0 when no driver / no device

}  // namespace drift
