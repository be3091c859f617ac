// DLPack capsules -> TensorView, for the bindings alone (the one native file that sees Python).
//
// The native library never links libtorch (DESIGN.md section 1); Python exports each tensor
// with `__dlpack__()` and the bindings turn the capsule into a checked TensorView.
#pragma once

#include <cstdint>
#include <string>

#include <Python.h>

#include "tensor_view.hpp"

namespace drift {

// The DLPack (v0.x, legacy capsule "dltensor") ABI, written from the public specification.
namespace dlpack {
enum DeviceType : int32_t { kCPU = 1, kCUDA = 2, kCUDAHost = 3, kCUDAManaged = 13 };
enum TypeCode : uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBfloat = 4, kBool = 6 };
struct Device { int32_t device_type; int32_t device_id; };
struct DataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct Tensor {
  void* data; Device device; int32_t ndim; DataType dtype;
  int64_t* shape; int64_t* strides; uint64_t byte_offset;
};
struct ManagedTensor { Tensor dl_tensor; void* manager_ctx; void (*deleter)(ManagedTensor*); };
}  // namespace dlpack


// Reads a "dltensor" capsule without consuming it: the producer's capsule destructor still
// frees the memory handle, and the Python caller keeps the source tensor alive meanwhile.
inline TensorView view_from_capsule(PyObject* capsule, const char* arg) {
  if (capsule == nullptr || !PyCapsule_CheckExact(capsule) || !PyCapsule_IsValid(capsule, "dltensor"))
    fail(std::string(arg) + ": expected an unconsumed DLPack capsule ('dltensor')");
  auto* mt = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
  if (mt == nullptr) fail(std::string(arg) + ": empty DLPack capsule");
  const dlpack::Tensor& t = mt->dl_tensor;
  TensorView v;
  if (t.ndim < 0 || t.ndim > 8) fail(std::string(arg) + ": unsupported rank");
  if (t.dtype.lanes != 1) fail(std::string(arg) + ": vector dtypes are not supported");
  const auto code = t.dtype.code;
  const auto bits = t.dtype.bits;
  if (code == dlpack::kInt && bits == 32) v.dtype = DType::kInt32;
  else if (code == dlpack::kInt && bits == 64) v.dtype = DType::kInt64;
  else if (code == dlpack::kBool && bits == 8) v.dtype = DType::kBool;
  // uint8 is its own dtype: reading a byte other than 0/1 as bool would be undefined.
  else if (code == dlpack::kUInt && bits == 8) v.dtype = DType::kUInt8;
  else if (code == dlpack::kFloat && bits == 16) v.dtype = DType::kFloat16;
  else if (code == dlpack::kBfloat && bits == 16) v.dtype = DType::kBFloat16;
  else if (code == dlpack::kFloat && bits == 32) v.dtype = DType::kFloat32;
  else if (code == dlpack::kFloat && bits == 64) v.dtype = DType::kFloat64;
  else fail(std::string(arg) + ": unsupported dtype (code " + std::to_string(code) + ", " + std::to_string(bits) + " bits)");
  if (t.device.device_type == dlpack::kCPU || t.device.device_type == dlpack::kCUDAHost) v.device = DeviceKind::kCPU;
  else if (t.device.device_type == dlpack::kCUDA || t.device.device_type == dlpack::kCUDAManaged) v.device = DeviceKind::kCUDA;
  else fail(std::string(arg) + ": unsupported device type " + std::to_string(t.device.device_type));
  v.device_id = t.device.device_id;
  v.shape.assign(t.shape, t.shape + t.ndim);
  for (auto s : v.shape)
    if (s < 0) fail(std::string(arg) + ": negative extent");
  if (t.strides == nullptr) {
    v.strides.assign(t.ndim, 1);
    for (int i = t.ndim - 2; i >= 0; --i) v.strides[i] = v.strides[i + 1] * v.shape[i + 1];
  } else {
    v.strides.assign(t.strides, t.strides + t.ndim);
  }
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  if (v.numel() > 0 && t.data == nullptr) fail(std::string(arg) + ": null data pointer");
  return v;
}

}  // namespace drift
