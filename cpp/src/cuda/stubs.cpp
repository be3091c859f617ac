// Stand-ins for the CUDA drivers in builds without a CUDA compiler: they report, never crash.
#include <stdexcept>

#include "drivers.hpp"

namespace drift {

namespace {
[[noreturn]] void no_cuda() { throw std::runtime_error("drift was built without CUDA kernels (no CUDA compiler at build time)"); }
}  // namespace

void lcs_cuda(const LcsArgs&, const TensorView&, std::uintptr_t) { no_cuda(); }
int64_t lcs_cuda_max_length() { return 0; }
void token_logps_forward_cuda(const TokenLogpsForwardArgs&, std::uintptr_t) { no_cuda(); }
void token_logps_backward_cuda(const TokenLogpsBackwardArgs&, std::uintptr_t) { no_cuda(); }
void oal_forward_cuda(const OalForwardArgs&, std::uintptr_t) { no_cuda(); }
void oal_backward_cuda(const OalBackwardArgs&, std::uintptr_t) { no_cuda(); }
bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }

}  // namespace drift
