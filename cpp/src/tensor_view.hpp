// Typed, checked views over memory handed in from Python (dlpack_capsule.hpp makes them from
// DLPack capsules; only the bindings see Python). Every kernel entry point checks rank, dtype,
// device and contiguity here before it touches memory.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace drift {

enum class DType { kInt32, kInt64, kBool, kFloat16, kBFloat16, kFloat32, kFloat64, kUInt8 };
enum class DeviceKind { kCPU, kCUDA };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kBool: return "bool";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kUInt8: return "uint8";
  }
  return "?";
}

// A non-owning view. `data` points at element 0 (byte_offset already applied).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kInt64;
  DeviceKind device = DeviceKind::kCPU;
  int device_id = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements

  int64_t numel() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
  bool is_contiguous() const {
    if (numel() == 0) return true;
    int64_t expected = 1;
    for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
  template <typename T> T* ptr() const { return static_cast<T*>(data); }
};

[[noreturn]] inline void fail(const std::string& what) { throw std::invalid_argument(what); }

// Shape/dtype/device/contiguity contract of one argument; throws naming the argument.
inline void expect(const TensorView& v, const char* arg, std::initializer_list<DType> dtypes,
                   std::initializer_list<int64_t> shape /* -1: any */, DeviceKind device, int device_id) {
  bool ok = false;
  for (auto d : dtypes) ok = ok || d == v.dtype;
  if (!ok) fail(std::string(arg) + ": unexpected dtype " + dtype_name(v.dtype));
  if (v.shape.size() != shape.size())
    fail(std::string(arg) + ": expected rank " + std::to_string(shape.size()) + ", got " + std::to_string(v.shape.size()));
  size_t i = 0;
  for (auto s : shape) {
    if (s >= 0 && v.shape[i] != s)
      fail(std::string(arg) + ": dimension " + std::to_string(i) + " is " + std::to_string(v.shape[i]) + ", expected " + std::to_string(s));
    ++i;
  }
  if (v.device != device || (device == DeviceKind::kCUDA && v.device_id != device_id))
    fail(std::string(arg) + ": on the wrong device");
  if (!v.is_contiguous()) fail(std::string(arg) + ": must be contiguous");
}

}  // namespace drift
