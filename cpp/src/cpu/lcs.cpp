// CPU batch driver for drift::lcs: one pair per task on a thread pool, each thread with its
// own scratch (match table, hash index, column history), reused across the pairs it takes.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "drift/lcs.hpp"
#include "drivers.hpp"
#include "cpu/parallel.hpp"

namespace drift {

void validate_lcs_args(const LcsArgs& a, DeviceKind device) {
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

namespace {

// Per-thread scratch: an open-addressing map token -> match-table row, the match table
// (one ceil(M/64)-word bit vector per distinct token of y) and the column history.
struct Scratch {
  std::vector<int64_t> keys;
  std::vector<int32_t> rows;
  std::vector<uint64_t> pm;
  std::vector<uint64_t> history;
  std::vector<uint64_t> ones;
};

inline uint64_t hash_token(int64_t t) { return static_cast<uint64_t>(t) * 0x9E3779B97F4A7C15ull; }

template <typename TA, typename TB>
int64_t lcs_pair(const TA* a, int64_t m, const TB* b, int64_t n, uint8_t* diff_a, uint8_t* diff_b, Scratch& s) {
  std::fill(diff_a, diff_a + m, uint8_t(1));
  std::fill(diff_b, diff_b + n, uint8_t(1));
  if (m == 0 || n == 0) return 0;
  const int64_t words = lcs::num_words(m);

  int shift_bits = 1;
  while ((int64_t(1) << shift_bits) < 2 * m) ++shift_bits;
  const uint64_t capacity = uint64_t(1) << shift_bits;
  const int shift = 64 - shift_bits;
  s.keys.assign(capacity, 0);
  s.rows.assign(capacity, -1);
  auto slot_of = [&](int64_t t) {
    uint64_t h = hash_token(t) >> shift;
    while (s.rows[h] >= 0 && s.keys[h] != t) h = (h + 1) & (capacity - 1);
    return h;
  };

  // First pass: distinct tokens -> rows; then one bit per position.
  int32_t distinct = 0;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t t = static_cast<int64_t>(a[i]);
    const uint64_t h = slot_of(t);
    if (s.rows[h] < 0) {
      s.keys[h] = t;
      s.rows[h] = distinct++;
    }
  }
  s.pm.assign(static_cast<size_t>(distinct) * words, 0);
  for (int64_t i = 0; i < m; ++i) {
    const int32_t r = s.rows[slot_of(static_cast<int64_t>(a[i]))];
    s.pm[static_cast<size_t>(r) * words + i / lcs::kWordBits] |= uint64_t(1) << (i % lcs::kWordBits);
  }

  s.history.resize(static_cast<size_t>(n) * words);
  s.ones.assign(words, ~uint64_t(0));
  const uint64_t* prev = s.ones.data();
  for (int64_t j = 0; j < n; ++j) {
    uint64_t* next = s.history.data() + static_cast<size_t>(j) * words;
    const int32_t r = s.rows[slot_of(static_cast<int64_t>(b[j]))];
    if (r < 0) {
      // No match anywhere in y: PM is zero and V is unchanged.
      std::memcpy(next, prev, sizeof(uint64_t) * words);
    } else {
      lcs::column_step(prev, next, s.pm.data() + static_cast<size_t>(r) * words, words);
    }
    prev = next;
  }
  return lcs::traceback(s.history.data(), words, a, m, b, n, diff_a, diff_b);
}

template <typename TA, typename TB>
void lcs_batch(const LcsArgs& args) {
  const int64_t B = args.y.shape[0], M = args.y.shape[1], N = args.y_prime.shape[1];
  const TA* y = args.y.ptr<TA>();
  const TB* yp = args.y_prime.ptr<TB>();
  const int64_t* y_len = args.y_len.ptr<int64_t>();
  const int64_t* yp_len = args.y_prime_len.ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    if (y_len[b] < 0 || y_len[b] > M)
      fail("y_lengths: entry " + std::to_string(b) + " is " + std::to_string(y_len[b]) + ", expected 0.." + std::to_string(M));
    if (yp_len[b] < 0 || yp_len[b] > N)
      fail("y_prime_lengths: entry " + std::to_string(b) + " is " + std::to_string(yp_len[b]) + ", expected 0.." + std::to_string(N));
  }
  // Token ids are hashed, never used as indices, but a negative id inside the lengths is
  // almost always undeclared padding (-100): refuse it like the Python layer does on CUDA.
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < y_len[b]; ++i)
      if (static_cast<int64_t>(y[b * M + i]) < 0)
        fail("y: negative token ids inside the valid lengths; pass pad_id or lengths to mark padding");
    for (int64_t j = 0; j < yp_len[b]; ++j)
      if (static_cast<int64_t>(yp[b * N + j]) < 0)
        fail("y_prime: negative token ids inside the valid lengths; pass pad_id or lengths to mark padding");
  }
  uint8_t* mask_y = args.mask_y.ptr<uint8_t>();
  uint8_t* mask_yp = args.mask_y_prime.ptr<uint8_t>();
  int64_t* out = args.lcs_len.ptr<int64_t>();
  const int threads = std::max(1, get_num_threads());
  std::vector<Scratch> scratch(static_cast<size_t>(threads));
  parallel_for(B, threads, [&](int tid, int64_t b) {
    uint8_t* ma = mask_y + b * M;
    uint8_t* mb = mask_yp + b * N;
    std::fill(ma + y_len[b], ma + M, uint8_t(0));
    std::fill(mb + yp_len[b], mb + N, uint8_t(0));
    out[b] = lcs_pair(y + b * M, y_len[b], yp + b * N, yp_len[b], ma, mb, scratch[tid]);
  });
}

}  // namespace

void lcs_cpu(const LcsArgs& args) {
  validate_lcs_args(args, DeviceKind::kCPU);
  const bool a64 = args.y.dtype == DType::kInt64, b64 = args.y_prime.dtype == DType::kInt64;
  if (a64 && b64) lcs_batch<int64_t, int64_t>(args);
  else if (a64) lcs_batch<int64_t, int32_t>(args);
  else if (b64) lcs_batch<int32_t, int64_t>(args);
  else lcs_batch<int32_t, int32_t>(args);
}

}  // namespace drift
