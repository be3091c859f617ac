// Error checks and the device guard shared by the CUDA launchers (lcs.cu, oal.cu).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace drift {
namespace cuda {

inline void check(cudaError_t err, const char* who, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("drift ") + who + " CUDA: " + what + ": " + cudaGetErrorString(err));
}

// Makes `device` (the tensors' device) current for the launches of one call and restores the
// caller's device afterwards: a call on cuda:1 must neither launch on cuda:0 nor leave the
// thread (and with it PyTorch's current device) switched to cuda:1.
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* who) {
    check(cudaGetDevice(&previous_), who, "get device");
    if (previous_ != device) check(cudaSetDevice(device), who, "set device");
  }
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace cuda
}  // namespace drift
