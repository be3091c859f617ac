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
//   w.shfl(r, k)         lane k's value of r, to every lane (k warp-uniform).
//   w.shfl_down(r, d)    lane l gets lane l + d's value of r (its own where l + d >= 32).
//   w.sync()             orders the lanes' memory writes (__syncwarp).
// Code outside these calls only touches warp-uniform values, so both readings agree.
//
// Per column j (token t = y'_j): the match word of 64 positions of y is two 32-lane ballots
// "y[p] == t" over consecutive positions (one staged or global load per lane per 32
// positions, all 32 lanes busy whatever the length); lane l owns the words l, l + 32, ... of
// V; the multi-word addition's carries cross lanes through two more ballots and
// lcs::resolve_carries. Each column stores F_j = V_j & ~PM (one word per word of V) for
// lcs::traceback, which the whole warp walks in lockstep.
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

// Match words of one column, PM[token] over y's positions [0, 64 * words), into row[0, words):
// one 32-lane ballot per 32 positions; lane q of a group of 32 ballots keeps ballot q, and even
// lanes join their ballot with the next lane's into one word and store it (coalesced).
template <bool kStaged, typename W, typename TA>
DRIFT_HD void match_words(W& w, const TA* a, int64_t m, const int64_t* staged, int64_t words, int64_t token,
                          uint64_t* row) {
  const int64_t halves = 2 * words;
  for (int64_t g = 0; g < halves; g += kLanes) {
    const int64_t count = halves - g < kLanes ? halves - g : kLanes;
    typename W::template Reg<uint32_t> half;
    w.each([&](int lane) { half[lane] = 0; });
    DRIFT_UNROLL_4
    for (int64_t q = 0; q < count; ++q) {
      const int64_t base = (g + q) * kLanes;
      const uint32_t bits = w.ballot([&](int lane) {
        const int64_t p = base + lane;
        if (kStaged) return staged[p] == token;
        return p < m && static_cast<int64_t>(a[p]) == token;
      });
      w.each([&](int lane) {
        if (lane == q) half[lane] = bits;
      });
    }
    typename W::template Reg<uint32_t> high = w.shfl_down(half, 1);
    w.each([&](int lane) {
      if (lane % 2 == 0 && lane < count)
        row[(g + lane) / 2] = static_cast<uint64_t>(half[lane]) | (static_cast<uint64_t>(high[lane]) << 32);
    });
  }
}

// LCS of a[0..m) and b[0..n) by one warp. mask_a[0..M) and mask_b[0..N) are set to "is a
// difference token" (positions >= m / >= n: false); `flat` holds n * ceil(m / 64) words of
// history; `staged` (kStaged) holds staged_positions(m) int64 slots of shared memory and
// `pm_block` kLanes * ceil(m / 64) words of it, else y is read from `a` directly and the match
// words wait in the history slots. Returns the LCS length (on every lane).
//
// Columns go in blocks of 32: first the block's match words, built with no dependence between
// columns (throughput-bound), into `pm_block` (shared memory: the serial recurrence then reads
// them at shared-memory latency); then the serial V recurrence over the block, which stores
// F = V & ~PM per column into the history.
// Finally the whole warp walks lcs::traceback in lockstep: it loads the F words of 32 columns
// (and their tokens) in one step and moves between them by shuffles, reloading only every 32
// columns or when the walk enters the next 64 positions, so a step costs a shuffle, not a
// global-memory round trip.
template <bool kStaged, typename W, typename TA, typename TB, typename Mask>
DRIFT_HD int64_t warp_lcs(W& w, const TA* a, int64_t m, int64_t M, const TB* b, int64_t n, int64_t N,
                          int64_t* staged, uint64_t* pm_block, Mask* mask_a, Mask* mask_b, uint64_t* flat) {
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
  typename W::template Reg<int64_t> column_tokens;  // lane l: y'[j0 + l]
  for (int64_t j0 = 0; j0 < n; j0 += kLanes) {
    const int64_t cols = n - j0 < kLanes ? n - j0 : kLanes;
    w.each([&](int lane) { column_tokens[lane] = lane < cols ? static_cast<int64_t>(b[j0 + lane]) : kNoToken; });
    uint64_t* pm_rows = kStaged ? pm_block : flat + j0 * words;
    for (int64_t jj = 0; jj < cols; ++jj)
      match_words<kStaged>(w, a, m, staged, words, w.shfl(column_tokens, static_cast<int>(jj)), pm_rows + jj * words);
    w.sync();  // the match words were stored by other lanes than the ones reading them below
    for (int64_t jj = 0; jj < cols; ++jj) {
      const uint64_t* pm_row = pm_rows + jj * words;
      uint64_t* row = flat + (j0 + jj) * words;
      uint32_t carry = 0;
      DRIFT_UNROLL
      for (int k = 0; k < kMaxWordsPerLane; ++k) {
        if (k >= rounds) break;  // warp-uniform
        const int64_t word0 = int64_t(k) * kLanes;
        // V += V & PM across the lanes' words, then V = sum | (V & ~PM).
        typename W::template Reg<uint64_t> pm;
        typename W::template Reg<uint64_t> sum;
        typename W::template Reg<uint64_t> own_carry;
        w.each([&](int lane) {
          pm[lane] = word0 + lane < words ? pm_row[word0 + lane] : 0;
          uint64_t c = 0;
          sum[lane] = add_carry(v[k][lane], v[k][lane] & pm[lane], 0, &c);
          own_carry[lane] = c;
        });
        const uint32_t gen = w.ballot([&](int lane) { return word0 + lane < words && own_carry[lane] != 0; });
        const uint32_t prop = w.ballot([&](int lane) { return word0 + lane < words && sum[lane] == ~uint64_t(0); });
        uint32_t carry_out = 0;
        const uint32_t carries = resolve_carries(gen, prop, carry, &carry_out);
        carry = carry_out;
        w.each([&](int lane) {
          if (word0 + lane < words) {
            v[k][lane] = combine(sum[lane] + ((carries >> lane) & 1u), v[k][lane], pm[lane]);
            row[word0 + lane] = v[k][lane] & ~pm[lane];
          }
        });
      }
    }
    w.sync();  // the next block's match words overwrite this block's
  }
  w.sync();  // orders the lanes' history writes before the walk reads them

  typename W::template Reg<uint64_t> f_block;  // lane l: word `block_word` of F of column block_lo + l
  typename W::template Reg<int64_t> b_block;   // lane l: y'[block_lo + l]
  int64_t block_lo = 0, block_word = -1;
  auto flat_word = [&](int64_t col, int64_t word) -> uint64_t {
    const int64_t c = col - 1;  // columns only move down, so c < the block's end
    if (word != block_word || c < block_lo) {
      block_lo = c + 1 > kLanes ? c + 1 - kLanes : 0;
      block_word = word;
      const int64_t lo = block_lo;
      w.each([&](int lane) {
        const int64_t k = lo + lane;
        f_block[lane] = k <= c ? flat[k * words + word] : 0;
        b_block[lane] = k <= c ? static_cast<int64_t>(b[k]) : kNoToken;
      });
    }
    return w.shfl(f_block, static_cast<int>(c - block_lo));
  };
  auto match = [&](int64_t i, int64_t col) {  // called right after flat_word(col, .)
    const int64_t ai = kStaged ? staged[i - 1] : static_cast<int64_t>(a[i - 1]);
    return ai == w.shfl(b_block, static_cast<int>(col - 1 - block_lo));
  };
  return traceback(flat_word, match, m, n, mask_a, mask_b);
}

}  // namespace lcs
}  // namespace drift
