// The argument checks of all drivers (validate.hpp): the CPU drivers and the CUDA launchers
// call the same functions, so both reject the same arguments with the same messages.
#include "validate.hpp"

#include <string>

namespace drift {

namespace {

DType acc_dtype(DType logits) { return logits == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32; }

// The sizes every other argument of an op is checked against, read off its checked logits.
struct LogitsDims {
  int64_t B, T, V;
  DType acc;  // dtype of log-probs, lse and upstream gradients
  int dev;    // device ordinal
};

// logits: rank 3, floating, on `device`, unit stride along V; strides along B and T are free
// (so that views like logits[:, :-1] need no copy).
LogitsDims expect_logits(const TensorView& v, DeviceKind device) {
  if (v.shape.size() != 3) fail("logits: expected rank 3 (B, T, V), got rank " + std::to_string(v.shape.size()));
  if (v.dtype != DType::kFloat32 && v.dtype != DType::kBFloat16 && v.dtype != DType::kFloat16 &&
      v.dtype != DType::kFloat64)
    fail(std::string("logits: unexpected dtype ") + dtype_name(v.dtype) + " (float32, bfloat16, float16, float64)");
  if (v.device != device) fail("logits: on the wrong device");
  if (v.shape[2] < 1) fail("logits: the vocabulary dimension V must be >= 1");
  // An empty tensor is never read: any strides will do (torch gives them arbitrary ones).
  if (v.numel() > 0) {
    if (v.shape[2] > 1 && v.strides[2] != 1) fail("logits: the vocabulary dimension must have unit stride");
    for (int d = 0; d < 2; ++d)
      if (v.shape[d] > 1 && v.strides[d] < 0) fail("logits: negative strides are not supported");
  }
  return {v.shape[0], v.shape[1], v.shape[2], acc_dtype(v.dtype), v.device_id};
}

// Ids of the valid entries must lie in [0, V): checked before any row is touched.
void expect_ids_in_range(const TensorView& ids, const TensorView& mask, int64_t V, const char* arg) {
  const int64_t* id = ids.ptr<int64_t>();
  const bool* ok = mask.ptr<bool>();
  for (int64_t i = 0, n = ids.numel(); i < n; ++i)
    if (ok[i] && (id[i] < 0 || id[i] >= V))
      fail(std::string(arg) + ": id " + std::to_string(id[i]) + " outside [0, " + std::to_string(V) + ")");
}

}  // namespace

void validate(const LcsArgs& a, DeviceKind device) {
  const int dev = a.y.device_id;
  if (a.y.shape.size() != 2) fail("y: expected rank 2 (B, M)");
  if (a.y_prime.shape.size() != 2) fail("y_prime: expected rank 2 (B, N)");
  const int64_t B = a.y.shape[0], M = a.y.shape[1], N = a.y_prime.shape[1];
  expect(a.y, "y", {DType::kInt32, DType::kInt64}, {B, M}, device, dev);
  expect(a.y_prime, "y_prime", {DType::kInt32, DType::kInt64}, {B, N}, device, dev);
  expect(a.y_len, "y_lengths", {DType::kInt64}, {B}, device, dev);
  expect(a.y_prime_len, "y_prime_lengths", {DType::kInt64}, {B}, device, dev);
  expect(a.mask_y, "mask_y", {DType::kBool}, {B, M}, device, dev);
  expect(a.mask_y_prime, "mask_y_prime", {DType::kBool}, {B, N}, device, dev);
  expect(a.lcs_len, "lcs_length", {DType::kInt64}, {B}, device, dev);
}

void validate(const TokenLogpsForwardArgs& a, DeviceKind device) {
  const auto [B, T, V, acc, dev] = expect_logits(a.logits, device);
  expect(a.labels, "labels", {DType::kInt64}, {B, T}, device, dev);
  expect(a.mask, "mask", {DType::kBool}, {B, T}, device, dev);
  expect(a.logps, "logps", {acc}, {B, T}, device, dev);
  expect(a.lse, "lse", {acc}, {B, T}, device, dev);
  if (device == DeviceKind::kCPU) expect_ids_in_range(a.labels, a.mask, V, "labels");
}

void validate(const TokenLogpsBackwardArgs& a, DeviceKind device) {
  const auto [B, T, V, acc, dev] = expect_logits(a.logits, device);
  expect(a.grad_logps, "grad_logps", {acc}, {B, T}, device, dev);
  expect(a.labels, "labels", {DType::kInt64}, {B, T}, device, dev);
  expect(a.mask, "mask", {DType::kBool}, {B, T}, device, dev);
  expect(a.lse, "lse", {acc}, {B, T}, device, dev);
  expect(a.grad_logits, "grad_logits", {a.logits.dtype}, {B, T, V}, device, dev);
  if (device == DeviceKind::kCPU) expect_ids_in_range(a.labels, a.mask, V, "labels");
}

void validate(const OalForwardArgs& a, DeviceKind device) {
  const auto [B, T, V, acc, dev] = expect_logits(a.logits, device);
  if (a.targets.shape.size() != 2) fail("targets: expected rank 2 (B, M)");
  const int64_t M = a.targets.shape[1];
  expect(a.targets, "targets", {DType::kInt64}, {B, M}, device, dev);
  expect(a.logits_mask, "logits_mask", {DType::kBool}, {B, T}, device, dev);
  expect(a.targets_mask, "targets_mask", {DType::kBool}, {B, M}, device, dev);
  expect(a.target_logps, "target_logps", {acc}, {B, M}, device, dev);
  expect(a.lse, "lse", {acc}, {B, T}, device, dev);
  expect(a.argmax, "argmax", {DType::kInt64}, {B, M}, device, dev);
  if (device == DeviceKind::kCPU) expect_ids_in_range(a.targets, a.targets_mask, V, "targets");
}

void validate(const OalBackwardArgs& a, DeviceKind device) {
  const auto [B, T, V, acc, dev] = expect_logits(a.logits, device);
  if (a.targets.shape.size() != 2) fail("targets: expected rank 2 (B, M)");
  const int64_t M = a.targets.shape[1];
  expect(a.grad_target_logps, "grad_target_logps", {acc}, {B, M}, device, dev);
  expect(a.targets, "targets", {DType::kInt64}, {B, M}, device, dev);
  expect(a.lse, "lse", {acc}, {B, T}, device, dev);
  expect(a.argmax, "argmax", {DType::kInt64}, {B, M}, device, dev);
  expect(a.grad_logits, "grad_logits", {a.logits.dtype}, {B, T, V}, device, dev);
  if (device == DeviceKind::kCPU) {
    // A slot with argmax >= 0 names a position and a target id the backward dereferences.
    const int64_t* am = a.argmax.ptr<int64_t>();
    const int64_t* id = a.targets.ptr<int64_t>();
    for (int64_t i = 0; i < B * M; ++i) {
      if (am[i] < -1 || am[i] >= T) fail("argmax: position " + std::to_string(am[i]) + " outside [-1, T)");
      if (am[i] >= 0 && (id[i] < 0 || id[i] >= V))
        fail("targets: id " + std::to_string(id[i]) + " outside [0, " + std::to_string(V) + ")");
    }
  }
}

}  // namespace drift
