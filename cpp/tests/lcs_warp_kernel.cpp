// Runs, on the CPU, the body of the CUDA LCS kernel (lcs::warp_lcs in drift/lcs_warp.hpp, the
// very code cpp/src/cuda/lcs.cu launches) for one pair per call, with an emulated warp: 32
// lanes taken one after the other between the collectives (ballots, shuffles). Covers the clamped
// lengths and mask initialisation, both match paths (y staged in "shared memory" and read
// straight from y), the ballot-built match words, the lane-parallel column step with its carry
// ballots and lcs::resolve_carries across rounds of 32 words, the F history layout and the
// run-skipping lcs::traceback walked by the whole warp over blocks of 32 columns. Lengths and masks are compared with a naive O(m n) dynamic
// programme and its own traceback (same tie-break), on random pairs from small alphabets (many
// ties), lengths crossing the 32-position ballot, 64-bit word and 32-word round boundaries.
// Built and run by tests/test_lcs_native.py; exits non-zero on the first mismatch.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "drift/lcs_warp.hpp"

using namespace drift;

constexpr int kWarp = lcs::kLanes;

// lcs::warp_lcs's warp interface on the CPU: every register holds all 32 lanes' values.
struct HostWarp {
  template <typename T> struct Reg {
    T x[kWarp];
    T& operator[](int lane) { return x[lane]; }
  };
  template <typename F> void each(F f) {
    for (int lane = 0; lane < kWarp; ++lane) f(lane);
  }
  template <typename F> uint32_t ballot(F f) {
    uint32_t bits = 0;
    for (int lane = 0; lane < kWarp; ++lane) bits |= static_cast<uint32_t>(bool(f(lane))) << lane;
    return bits;
  }
  template <typename T> T shfl(Reg<T>& r, int src) { return r.x[src]; }
  template <typename T> Reg<T> shfl_down(Reg<T>& r, int delta) {
    Reg<T> out;
    for (int lane = 0; lane < kWarp; ++lane) out.x[lane] = r.x[lane + delta < kWarp ? lane + delta : lane];
    return out;
  }
  void sync() {}
};

struct Result {
  int64_t length = 0;
  std::vector<uint8_t> mask_a, mask_b;
};

// The kernel's per-pair work, as lcs_kernel calls it: lengths clamped, fresh garbage in the
// staging buffer, the masks and the history.
template <typename TA, typename TB>
Result warp_kernel(const std::vector<TA>& row_a, int64_t len_a, const std::vector<TB>& row_b, int64_t len_b,
                   bool staged) {
  const int64_t M = static_cast<int64_t>(row_a.size()), N = static_cast<int64_t>(row_b.size());
  const int64_t m = std::min(std::max(len_a, int64_t(0)), M);
  const int64_t n = std::min(std::max(len_b, int64_t(0)), N);
  const int64_t words_max = lcs::num_words(M);
  Result r;
  r.mask_a.assign(M, 2);
  r.mask_b.assign(N, 2);
  std::vector<int64_t> smem(std::max<int64_t>(1, words_max * lcs::kWordBits), 12345);
  std::vector<uint64_t> pm_block(std::max<int64_t>(1, words_max * lcs::kLanes), 0xfeedull);
  std::vector<uint64_t> hist(std::max<int64_t>(1, N * words_max), 0xdeadbeefull);
  HostWarp w;
  r.length = staged ? lcs::warp_lcs<true>(w, row_a.data(), m, M, row_b.data(), n, N, smem.data(), pm_block.data(), r.mask_a.data(),
                                          r.mask_b.data(), hist.data())
                    : lcs::warp_lcs<false>(w, row_a.data(), m, M, row_b.data(), n, N, smem.data(), pm_block.data(), r.mask_a.data(),
                                           r.mask_b.data(), hist.data());
  return r;
}

// Independent reference: the full DP table and the documented tie-break.
template <typename TA, typename TB>
Result naive(const std::vector<TA>& a, int64_t m, const std::vector<TB>& b, int64_t n) {
  std::vector<int64_t> L((m + 1) * (n + 1), 0);
  auto at = [&](int64_t i, int64_t j) -> int64_t& { return L[i * (n + 1) + j]; };
  for (int64_t i = 1; i <= m; ++i)
    for (int64_t j = 1; j <= n; ++j)
      at(i, j) = static_cast<int64_t>(a[i - 1]) == static_cast<int64_t>(b[j - 1]) ? at(i - 1, j - 1) + 1
                                                                                 : std::max(at(i - 1, j), at(i, j - 1));
  Result r;
  r.mask_a.assign(a.size(), 0);
  r.mask_b.assign(b.size(), 0);
  for (int64_t i = 0; i < m; ++i) r.mask_a[i] = 1;
  for (int64_t j = 0; j < n; ++j) r.mask_b[j] = 1;
  int64_t i = m, j = n;
  while (i > 0 && j > 0) {
    if (static_cast<int64_t>(a[i - 1]) == static_cast<int64_t>(b[j - 1])) {
      r.mask_a[--i] = 0;
      r.mask_b[--j] = 0;
      ++r.length;
    } else if (at(i - 1, j) == at(i, j)) {
      --i;
    } else {
      --j;
    }
  }
  return r;
}

int main() {
  std::mt19937_64 rng(7);
  int failures = 0, trials = 0;
  const int64_t widths[] = {0, 1, 5, 31, 32, 33, 63, 64, 65, 127, 128, 200, 2047, 2048, 2049, 2112, 4100};
  for (int round = 0; round < 3; ++round) {
    for (int64_t M : widths) {
      for (int64_t N : {int64_t(0), int64_t(1), int64_t(7), int64_t(31), int64_t(32), int64_t(33), int64_t(64), int64_t(97), int64_t(200), int64_t(700)}) {
        const uint64_t alphabet = 1 + rng() % 6;
        std::vector<int64_t> a(M);
        std::vector<int32_t> b(N);
        for (auto& x : a) x = static_cast<int64_t>(rng() % alphabet) + 3;
        for (auto& x : b) x = static_cast<int32_t>(rng() % alphabet) + 3;
        // Lengths: full, random inside, and out of range (the kernel clamps them).
        const int64_t la = round == 0 ? M : round == 1 ? (M ? int64_t(rng() % (M + 1)) : 0) : M + 5;
        const int64_t lb = round == 0 ? N : round == 1 ? (N ? int64_t(rng() % (N + 1)) : 0) : -3;
        const Result want = naive(a, std::min(la, M), b, std::max<int64_t>(0, std::min(lb, N)));
        for (bool staged : {true, false}) {
          ++trials;
          const Result got = warp_kernel(a, la, b, lb, staged);
          if (got.length != want.length || got.mask_a != want.mask_a || got.mask_b != want.mask_b) {
            if (++failures < 5)
              std::printf("mismatch: M %lld N %lld la %lld lb %lld staged %d: length %lld vs %lld\n", (long long)M,
                          (long long)N, (long long)la, (long long)lb, int(staged), (long long)got.length,
                          (long long)want.length);
          }
        }
      }
    }
  }
  std::printf("%d trials, %d mismatches\n", trials, failures);
  return failures == 0 ? 0 : 1;
}
