// The one switch from a logits dtype to its element type, shared by the CPU drivers and the
// CUDA launchers of the vocabulary ops: dispatch_logits_dtype(dtype, [&](auto tag) { ... })
// calls the lambda with TypeTag<T> for T = float, double, vocab::bf16 or vocab::fp16.
#pragma once

#include <string>

#include "drift/vocab.hpp"
#include "tensor_view.hpp"

namespace drift {

template <typename T> struct TypeTag {
  using type = T;
};

template <typename Fn> void dispatch_logits_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: return fn(TypeTag<float>{});
    case DType::kFloat64: return fn(TypeTag<double>{});
    case DType::kBFloat16: return fn(TypeTag<vocab::bf16>{});
    case DType::kFloat16: return fn(TypeTag<vocab::fp16>{});
    default: fail(std::string("logits: unexpected dtype ") + dtype_name(dtype));
  }
}

}  // namespace drift
