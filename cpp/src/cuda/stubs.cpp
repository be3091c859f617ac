// Stand-ins for the CUDA drivers in builds without a CUDA compiler: they report, never crash.
#include <stdexcept>

#include "drivers.hpp"

namespace drift {

namespace {
[[noreturn]] void no_cuda() { throw std::runtime_error("drift was built without CUDA kernels (no CUDA compiler at build time)"); }
}  // namespace

void lcs_cuda(const LcsArgs&, const TensorView&, std::uintptr_t) { no_cuda(); }
int64_t lcs_cuda_max_length() { return 0; }
template <typename Args> void run_cuda(const Args&, std::uintptr_t) { no_cuda(); }
template void run_cuda(const TokenLogpsForwardArgs&, std::uintptr_t);
template void run_cuda(const TokenLogpsBackwardArgs&, std::uintptr_t);
template void run_cuda(const OalForwardArgs&, std::uintptr_t);
template void run_cuda(const OalBackwardArgs&, std::uintptr_t);
bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }

}  // namespace drift
