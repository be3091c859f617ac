// One warp computes the LCS masks of one pair: the body of the CUDA kernel (cpp/src/cuda/lcs.cu),
// written once against a small "warp" interface so that the CPU emulation test
// (cpp/tests/lcs_warp_kernel.cpp) runs this very code with the 32 lanes taken one after the
// other between collectives.
//
// The warp interface W provides:
//   W::Reg<T>            a per-lane register; r[lane] is this lane's value (on the GPU each lane
//                        holds its own and the index is ignored; the emulator holds 32).
//   w.each(f)            runs f(lane) for every lane (on the GPU: for the calling lane).
//   w.ballot(f)          bit k set iff f(k) for lane k (the GPU's __ballot_sync).
//   w.shfl(r, k)         lane k's value of r, to every lane.
//   w.sync()             orders the lanes' memory writes (__syncwarp).
//   w.lane0(f)           runs f() on lane 0 only.
// Code outside these calls only touches warp-uniform values, so both readings agree.
//
// Per column j (token t = y'_j): the match word of 64 positions of y is two 32-lane ballots
// "y[p] == t" over consecutive positions (one staged or global load per lane per 32
// positions, all 32 lanes busy whatever the length); lane l owns the words l, l + 32, ... of
// V and keeps the two ballots of its word; the multi-word addition's carries cross lanes
// through two more ballots and lcs::resolve_carries. Each column stores F_j = V_j & ~PM (one
// word per word of V) for lcs::traceback, which runs on lane 0.
#pragma once

#include <cstdint>

#include "drift/common.hpp"
#include "drift/lcs.hpp"

namespace drift {
namespace lcs {

constexpr int kLanes = 32;
constexpr int kMaxWordsPerLane = 8;  // V words per lane: sequences up to 8 * 32 * 64 = 16384
constexpr int64_t kWarpMaxLength = int64_t(kMaxWordsPerLane) * kLanes * kWordBits;
constexpr int64_t kNoToken = INT64_MIN;  // padding of the staged copy of y; no valid id equals it

// Positions of y one warp stages in shared memory: whole words, so that ballots over them
// need no bounds check.
DRIFT_HD int64_t staged_positions(int64_t m) { return num_words(m) * kWordBits; }

// LCS of a[0..m) and b[0..n) by one warp. mask_a[0..M) and mask_b[0..N) are set to "is a
// difference token" (positions >= m / >= n: false); `flat` holds n * ceil(m / 64) words of F
// history; `staged` (kStaged) holds staged_positions(m) int64 slots of shared memory, else y is
// read from `a` directly. Returns the LCS length on lane 0 (0 on the other lanes).
template <bool kStaged, typename W, typename TA, typename TB, typename Mask>
DRIFT_HD int64_t warp_lcs(W& w, const TA* a, int64_t m, int64_t M, const TB* b, int64_t n, int64_t N,
                          int64_t* staged, Mask* mask_a, Mask* mask_b, uint64_t* flat) {
  const int64_t words = num_words(m);
  w.each([&](int lane) {
    for (int64_t i = lane; i < M; i += kLanes) mask_a[i] = Mask(i < m);
    for (int64_t j = lane; j < N; j += kLanes) mask_b[j] = Mask(j < n);
    if (kStaged)
      for (int64_t p = lane; p < words * kWordBits; p += kLanes) staged[p] = p < m ? static_cast<int64_t>(a[p]) : kNoToken;
  });
  w.sync();
  if (m == 0 || n == 0) return 0;

  const int rounds = static_cast<int>((words + kLanes - 1) / kLanes);  // words per lane in use
  typename W::template Reg<uint64_t> v[kMaxWordsPerLane];
  DRIFT_UNROLL
  for (int k = 0; k < kMaxWordsPerLane; ++k) w.each([&](int lane) { v[k][lane] = ~uint64_t(0); });
  typename W::template Reg<int64_t> column_tokens;  // lane l: y'[j0 + l] for the 32 columns from j0
  for (int64_t j = 0; j < n; ++j) {
    if (j % kLanes == 0)
      w.each([&](int lane) { column_tokens[lane] = j + lane < n ? static_cast<int64_t>(b[j + lane]) : kNoToken; });
    const int64_t token = w.shfl(column_tokens, static_cast<int>(j % kLanes));
    uint32_t carry = 0;
    DRIFT_UNROLL
    for (int k = 0; k < kMaxWordsPerLane; ++k) {
      if (k >= rounds) break;  // warp-uniform
      // Ballots 2l and 2l + 1 of this round are the low and high halves of lane l's match word.
      typename W::template Reg<uint64_t> pm;
      w.each([&](int lane) { pm[lane] = 0; });
      const int64_t first_ballot = int64_t(k) * 2 * kLanes;
      const int64_t left = 2 * words - first_ballot;
      const int64_t ballots = left < 2 * kLanes ? left : 2 * kLanes;
      DRIFT_UNROLL_4
      for (int64_t q = 0; q < ballots; ++q) {
        const int64_t base = (first_ballot + q) * kLanes;
        const uint32_t bits = w.ballot([&](int lane) {
          const int64_t p = base + lane;
          if (kStaged) return staged[p] == token;
          return p < m && static_cast<int64_t>(a[p]) == token;
        });
        const int owner = static_cast<int>(q >> 1);
        const int shift = static_cast<int>(q & 1) * 32;
        w.each([&](int lane) {
          if (lane == owner) pm[lane] |= static_cast<uint64_t>(bits) << shift;
        });
      }
      // V += V & PM across the lanes' words, then V = sum | (V & ~PM).
      typename W::template Reg<uint64_t> sum;
      typename W::template Reg<uint64_t> own_carry;
      w.each([&](int lane) {
        uint64_t c = 0;
        sum[lane] = add_carry(v[k][lane], v[k][lane] & pm[lane], 0, &c);
        own_carry[lane] = c;
      });
      const int64_t word0 = int64_t(k) * kLanes;
      const uint32_t gen = w.ballot([&](int lane) { return word0 + lane < words && own_carry[lane] != 0; });
      const uint32_t prop = w.ballot([&](int lane) { return word0 + lane < words && sum[lane] == ~uint64_t(0); });
      uint32_t carry_out = 0;
      const uint32_t carries = resolve_carries(gen, prop, carry, &carry_out);
      carry = carry_out;
      w.each([&](int lane) {
        const int64_t word = word0 + lane;
        if (word < words) {
          v[k][lane] = combine(sum[lane] + ((carries >> lane) & 1u), v[k][lane], pm[lane]);
          flat[j * words + word] = v[k][lane] & ~pm[lane];
        }
      });
    }
  }
  w.sync();  // orders the lanes' history (and mask) writes before lane 0 reads them
  int64_t length = 0;
  w.lane0([&] {
    auto flat_word = [&](int64_t col, int64_t word) { return flat[(col - 1) * words + word]; };
    auto match = [&](int64_t i, int64_t col) {
      const int64_t ai = kStaged ? staged[i - 1] : static_cast<int64_t>(a[i - 1]);
      return ai == static_cast<int64_t>(b[col - 1]);
    };
    length = traceback(flat_word, match, m, n, mask_a, mask_b);
  });
  return length;
}

}  // namespace lcs
}  // namespace drift
