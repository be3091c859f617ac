// Entry points of the batch drivers (CPU in cpu/, CUDA in cuda/), called by bindings.cpp.
// Every driver validates the views it receives (drift/lcs_args.hpp etc.) before any access.
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

// CPU thread count for every batch driver; 0 means all hardware threads.
int get_num_threads();
void set_num_threads(int n);

bool cuda_compiled();
int cuda_device_count();  // 0 when no driver / no device

}  // namespace drift
