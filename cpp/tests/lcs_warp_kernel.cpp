// Emulates, on the CPU, one warp of the CUDA LCS kernel (cpp/src/cuda/lcs.cu) per pair, built
// from the same drift/lcs.hpp helpers the kernel calls: the clamped lengths and mask
// initialisation, the transposed shared-memory staging (lcs::staged_index, lcs::kNoToken) and
// both match-word paths (lcs::match_word_staged, lcs::match_word_direct), the lane-parallel
// column step with its two ballots and lcs::resolve_carries across 32-word chunks, the column
// history layout and lcs::traceback. Lengths, masks and history are compared with a naive
// O(m n) dynamic programme and its own traceback (same tie-break), on random pairs from small
// alphabets (many ties), lengths crossing the 64-bit word and 32-word chunk boundaries.
// Built and run by tests/test_lcs_native.py; exits non-zero on the first mismatch.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "drift/lcs.hpp"

using namespace drift;

constexpr int kWarp = 32;

struct Result {
  int64_t length = 0;
  std::vector<uint8_t> mask_a, mask_b;
};

// The kernel body for one pair, lanes run one after the other between the ballots.
template <typename TA, typename TB>
Result warp_kernel(const std::vector<TA>& row_a, int64_t len_a, const std::vector<TB>& row_b, int64_t len_b,
                   bool staged) {
  const int64_t M = static_cast<int64_t>(row_a.size()), N = static_cast<int64_t>(row_b.size());
  const int64_t m = std::min(std::max(len_a, int64_t(0)), M);
  const int64_t n = std::min(std::max(len_b, int64_t(0)), N);
  const int64_t words_max = lcs::num_words(M);
  const int64_t words = lcs::num_words(m);
  const TA* a = row_a.data();
  const TB* c = row_b.data();
  Result r;
  r.mask_a.assign(M, 2);
  r.mask_b.assign(N, 2);
  std::vector<int64_t> smem(words_max * lcs::kWordBits, 12345);  // garbage outside [0, words*64)
  std::vector<uint64_t> hist(std::max<int64_t>(1, N * words_max), 0xdeadbeefull);
  for (int lane = 0; lane < kWarp; ++lane) {
    for (int64_t i = lane; i < M; i += kWarp) r.mask_a[i] = i < m;
    for (int64_t j = lane; j < N; j += kWarp) r.mask_b[j] = j < n;
    if (staged)
      for (int64_t p = lane; p < words * lcs::kWordBits; p += kWarp)
        smem[lcs::staged_index(p, words)] = p < m ? static_cast<int64_t>(a[p]) : lcs::kNoToken;
  }
  if (m > 0 && n > 0) {
    const int chunks = static_cast<int>((words + kWarp - 1) / kWarp);
    std::vector<uint64_t> v(static_cast<size_t>(chunks) * kWarp, ~uint64_t(0));  // v[k * 32 + lane]
    for (int64_t j = 0; j < n; ++j) {
      const int64_t token = static_cast<int64_t>(c[j]);
      uint32_t carry = 0;
      for (int k = 0; k < chunks; ++k) {
        uint64_t pm[kWarp], s[kWarp];
        uint32_t gen = 0, prop = 0;
        for (int lane = 0; lane < kWarp; ++lane) {
          const int64_t w = int64_t(k) * kWarp + lane;
          pm[lane] = 0;
          if (w < words)
            pm[lane] = staged ? lcs::match_word_staged(smem.data(), words, w, token)
                              : lcs::match_word_direct(a, m, w, token);
          uint64_t own = 0;
          s[lane] = lcs::add_carry(v[k * kWarp + lane], v[k * kWarp + lane] & pm[lane], 0, &own);
          gen |= static_cast<uint32_t>(w < words && own) << lane;
          prop |= static_cast<uint32_t>(w < words && s[lane] == ~uint64_t(0)) << lane;
        }
        uint32_t chunk_out = 0;
        const uint32_t carries = lcs::resolve_carries(gen, prop, carry, &chunk_out);
        carry = chunk_out;
        for (int lane = 0; lane < kWarp; ++lane) {
          const int64_t w = int64_t(k) * kWarp + lane;
          if (w < words) {
            uint64_t& vk = v[k * kWarp + lane];
            vk = lcs::combine(s[lane] + ((carries >> lane) & 1u), vk, pm[lane]);
            hist[j * words + w] = vk;
          }
        }
      }
    }
    r.length = lcs::traceback(hist.data(), words, a, m, c, n, r.mask_a.data(), r.mask_b.data());
  }
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
  const int64_t widths[] = {0, 1, 5, 63, 64, 65, 127, 128, 200, 2047, 2048, 2049, 2112, 4100};
  for (int round = 0; round < 3; ++round) {
    for (int64_t M : widths) {
      for (int64_t N : {int64_t(0), int64_t(1), int64_t(7), int64_t(64), int64_t(97)}) {
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
