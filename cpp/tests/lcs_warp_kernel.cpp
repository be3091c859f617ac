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
#include <type_traits>
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

// The kernel's per-pair work, as lcs_kernel calls it (raw lengths), with garbage in the
// staging buffer, the masks and the history.
template <typename TA, typename TB>
Result warp_kernel(const std::vector<TA>& row_a, int64_t len_a, const std::vector<TB>& row_b, int64_t len_b,
                   bool staged) {
  const int64_t M = static_cast<int64_t>(row_a.size()), N = static_cast<int64_t>(row_b.size());
  const int64_t words_max = lcs::num_words(M);
  Result r;
  r.mask_a.assign(M, 2);
  r.mask_b.assign(N, 2);
  std::vector<int64_t> smem(std::max<int64_t>(1, words_max * lcs::kWordBits), 12345);
  std::vector<uint64_t> pm_block(std::max<int64_t>(1, words_max * lcs::kLanes), 0xfeedull);
  std::vector<uint64_t> hist(std::max<int64_t>(1, N * words_max), 0xdeadbeefull);
  HostWarp w;
  // As the launcher picks: one V word per lane when y's width allows, else the maximum.
  const bool one = words_max <= lcs::kLanes;
  auto run = [&](auto staged_tag, auto rounds_tag) {
    return lcs::warp_lcs<decltype(staged_tag)::value, decltype(rounds_tag)::value>(
        w, row_a.data(), len_a, M, row_b.data(), len_b, N, smem.data(), pm_block.data(), r.mask_a.data(),
        r.mask_b.data(), hist.data());
  };
  using S = std::true_type;
  using G = std::false_type;
  using R1 = std::integral_constant<int, 1>;
  using R8 = std::integral_constant<int, lcs::kMaxWordsPerLane>;
  r.length = staged ? (one ? run(S{}, R1{}) : run(S{}, R8{})) : (one ? run(G{}, R1{}) : run(G{}, R8{}));
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

struct Tally {
  int trials = 0, failures = 0;
  void check(bool ok, const char* what, long long M, long long N, long long la, long long lb, bool staged,
             long long got, long long want) {
    ++trials;
    if (!ok && ++failures < 6)
      std::printf("mismatch (%s): M %lld N %lld la %lld lb %lld staged %d: length %lld vs %lld\n", what, M, N, la, lb,
                  int(staged), got, want);
  }
};

// Runs both paths on a pair and compares with the naive DP (valid lengths, non-negative ids).
template <typename TA, typename TB>
void expect_naive(Tally& t, const char* what, const std::vector<TA>& a, int64_t la, const std::vector<TB>& b,
                  int64_t lb) {
  const Result want = naive(a, la, b, lb);
  for (bool staged : {true, false}) {
    const Result got = warp_kernel(a, la, b, lb, staged);
    t.check(got.length == want.length && got.mask_a == want.mask_a && got.mask_b == want.mask_b, what,
            (long long)a.size(), (long long)b.size(), la, lb, staged, got.length, want.length);
  }
}

template <typename TA, typename TB>
void expect_invalid(Tally& t, const char* what, const std::vector<TA>& a, int64_t la, const std::vector<TB>& b,
                    int64_t lb) {
  for (bool staged : {true, false}) {
    const Result got = warp_kernel(a, la, b, lb, staged);
    t.check(got.length == -1, what, (long long)a.size(), (long long)b.size(), la, lb, staged, got.length, -1);
  }
}

int main() {
  std::mt19937_64 rng(7);
  Tally t;
  const int64_t widths[] = {0, 1, 5, 31, 32, 33, 63, 64, 65, 127, 128, 200, 2047, 2048, 2049, 2112, 4100};
  const int64_t others[] = {0, 1, 7, 31, 32, 33, 64, 97, 200, 700};
  for (int round = 0; round < 2; ++round) {
    for (int64_t M : widths) {
      for (int64_t N : others) {
        const uint64_t alphabet = 1 + rng() % 6;
        std::vector<int64_t> a(M);
        std::vector<int32_t> b(N);
        for (auto& x : a) x = static_cast<int64_t>(rng() % alphabet) + 3;
        for (auto& x : b) x = static_cast<int32_t>(rng() % alphabet) + 3;
        // Lengths: full, or random inside.
        const int64_t la = round == 0 ? M : (M ? int64_t(rng() % (M + 1)) : 0);
        const int64_t lb = round == 0 ? N : (N ? int64_t(rng() % (N + 1)) : 0);
        expect_naive(t, "small alphabet", a, la, b, lb);
        // Ids beyond 32 bits: x and x + 2^32 share their low 32 bits but are different tokens,
        // so 32-bit keys would match them; the pair must take the 64-bit keys.
        std::vector<int64_t> wa(M), wb(N);
        for (auto& x : wa) x = static_cast<int64_t>(rng() % alphabet) + (rng() % 2 ? (int64_t(1) << 32) : 0);
        for (auto& x : wb) x = static_cast<int64_t>(rng() % alphabet) + (rng() % 2 ? (int64_t(1) << 32) : 0);
        expect_naive(t, "64-bit ids", wa, la, wb, lb);
      }
    }
  }
  // Invalid pairs: lengths outside [0, width], negative ids inside the lengths. Negative ids
  // beyond the lengths are padding and fine.
  for (int64_t M : {int64_t(0), int64_t(5), int64_t(130)}) {
    for (int64_t N : {int64_t(0), int64_t(9), int64_t(70)}) {
      std::vector<int64_t> a(M, 4);
      std::vector<int32_t> b(N, 4);
      expect_invalid(t, "length > width", a, M + 1, b, N);
      expect_invalid(t, "negative length", a, M, b, -1);
      if (M > 0) {
        a[M - 1] = -7;
        expect_invalid(t, "negative id in y", a, M, b, N);
        expect_naive(t, "negative id beyond y's length", a, M - 1, b, N);
        a[M - 1] = 4;
      }
      if (N > 0) {
        b[0] = -1;
        expect_invalid(t, "negative id in y'", a, M, b, N);
        b[0] = 4;
      }
    }
  }
  std::printf("%d trials, %d mismatches\n", t.trials, t.failures);
  return t.failures == 0 ? 0 : 1;
}
