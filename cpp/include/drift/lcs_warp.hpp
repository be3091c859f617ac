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
//
// Ids are compared as 32-bit keys when every id of the pair fits (the common case: half the
// shared-memory traffic and one compare instead of two), as 64-bit ones otherwise. Positions
// and lengths are 32-bit (the kernel's maximum length is 16384).
#pragma once

#include <cstdint>

#include "drift/common.hpp"
#include "drift/lcs.hpp"

namespace drift {
namespace lcs {

constexpr int kLanes = 32;
constexpr int kMaxWordsPerLane = 8;  // V words per lane: sequences up to 8 * 32 * 64 = 16384
constexpr int64_t kWarpMaxLength = int64_t(kMaxWordsPerLane) * kLanes * kWordBits;
// Widest y' a launch accepts (positions are 32-bit; far beyond any history buffer).
constexpr int64_t kWarpMaxOtherLength = int64_t(1) << 30;

// Shared memory of one warp, per 64 positions of y: the staged ids (64 slots of up to 8 bytes)
// and one match word per column of a 32-column block.
constexpr int64_t kSharedWordsPerWord = kWordBits + kLanes;

// The staged copy of y is padded to whole words with a key no valid (non-negative) id equals.
template <typename Key> DRIFT_HD Key no_key() { return Key(-1); }

// Match words of two columns (tokens t0, t1; t1 may be a dummy whose words are not stored,
// row1 == nullptr), PM[t] over y's positions [0, 64 * words), into row0 / row1 [0, words): one
// staged load per lane per 32 positions serves both columns' 32-lane ballots; lane q of a
// group of 32 ballots keeps ballot q, and even lanes join their ballot with the next lane's
// into one word and store it (coalesced).
template <bool kStaged, typename Key, typename W, typename TA>
DRIFT_HD void match_words(W& w, const TA* a, int m, const Key* staged, int words, Key t0, Key t1, uint64_t* row0,
                          uint64_t* row1) {
  const int halves = 2 * words;
  for (int g = 0; g < halves; g += kLanes) {
    const int count = halves - g < kLanes ? halves - g : kLanes;
    typename W::template Reg<uint32_t> half0, half1;
    w.each([&](int lane) { half0[lane] = half1[lane] = 0; });
    // Ballot q of the group: both columns' bits; lane q keeps them (q = q0 + u, u a constant
    // in the unrolled loop below, so the test is one compare with an immediate).
    auto ballots = [&](int q0, int u) {
      const int base = (g + q0 + u) * kLanes;
      typename W::template Reg<Key> key;
      w.each([&](int lane) {
        key[lane] = kStaged ? staged[base + lane] : (base + lane < m ? static_cast<Key>(a[base + lane]) : no_key<Key>());
      });
      const uint32_t bits0 = w.ballot([&](int lane) { return key[lane] == t0; });
      const uint32_t bits1 = w.ballot([&](int lane) { return key[lane] == t1; });
      w.each([&](int lane) {
        const bool mine = lane - q0 == u;
        half0[lane] = mine ? bits0 : half0[lane];
        half1[lane] = mine ? bits1 : half1[lane];
      });
    };
    int q0 = 0;
    for (; q0 + 8 <= count; q0 += 8) {
      DRIFT_UNROLL
      for (int u = 0; u < 8; ++u) ballots(q0, u);
    }
    for (; q0 < count; ++q0) ballots(q0, 0);
    typename W::template Reg<uint32_t> high0 = w.shfl_down(half0, 1);
    typename W::template Reg<uint32_t> high1 = w.shfl_down(half1, 1);
    w.each([&](int lane) {
      if (lane % 2 == 0 && lane < count) {
        row0[(g + lane) / 2] = static_cast<uint64_t>(half0[lane]) | (static_cast<uint64_t>(high0[lane]) << 32);
        if (row1 != nullptr)
          row1[(g + lane) / 2] = static_cast<uint64_t>(half1[lane]) | (static_cast<uint64_t>(high1[lane]) << 32);
      }
    });
  }
}

// The LCS proper, for a valid pair (0 < m <= M, 0 < n, ids non-negative) with ids as Key.
// Columns go in blocks of 32: first the block's match words, built with no dependence between
// columns (throughput-bound), into `pm_block` (shared memory: the serial recurrence then reads
// them at shared-memory latency), or into the history slots when y is not staged; then the
// serial V recurrence over the block, which stores F = V & ~PM per column into the history.
// Finally the whole warp walks lcs::traceback in lockstep: it loads the F words of 32 columns
// (and their tokens) in one step and moves between them by shuffles, reloading only every 32
// columns or when the walk enters the next 64 positions, so a step costs a shuffle, not a
// global-memory round trip.
template <bool kStaged, int kRounds, typename Key, typename W, typename TA, typename TB, typename Mask>
DRIFT_HD int warp_lcs_keys(W& w, const TA* a, int m, const TB* b, int n, Key* staged, uint64_t* pm_block,
                           Mask* mask_a, Mask* mask_b, uint64_t* flat) {
  const int words = static_cast<int>(num_words(m));
  if (kStaged) {
    w.each([&](int lane) {
      for (int p = lane; p < words * kWordBits; p += kLanes) staged[p] = p < m ? static_cast<Key>(a[p]) : no_key<Key>();
    });
    w.sync();
  }
  const int rounds = (words + kLanes - 1) / kLanes;  // words per lane in use
  typename W::template Reg<uint64_t> v[kRounds];
  DRIFT_UNROLL
  for (int k = 0; k < kRounds; ++k) w.each([&](int lane) { v[k][lane] = ~uint64_t(0); });
  typename W::template Reg<Key> column_tokens;  // lane l: y'[j0 + l]
  for (int j0 = 0; j0 < n; j0 += kLanes) {
    const int cols = n - j0 < kLanes ? n - j0 : kLanes;
    w.each([&](int lane) { column_tokens[lane] = lane < cols ? static_cast<Key>(b[j0 + lane]) : no_key<Key>(); });
    uint64_t* pm_rows = kStaged ? pm_block : flat + int64_t(j0) * words;
    for (int jj = 0; jj < cols; jj += 2) {
      const bool pair = jj + 1 < cols;
      const Key t1 = w.shfl(column_tokens, pair ? jj + 1 : jj);
      match_words<kStaged>(w, a, m, staged, words, w.shfl(column_tokens, jj), pair ? t1 : no_key<Key>(),
                           pm_rows + jj * words, pair ? pm_rows + (jj + 1) * words : nullptr);
    }
    w.sync();  // the match words were stored by other lanes than the ones reading them below
    for (int jj = 0; jj < cols; ++jj) {
      const uint64_t* pm_row = pm_rows + jj * words;
      uint64_t* row = flat + int64_t(j0 + jj) * words;
      uint32_t carry = 0;
      DRIFT_UNROLL
      for (int k = 0; k < kRounds; ++k) {
        if (k >= rounds) break;  // warp-uniform
        const int word0 = k * kLanes;
        // V += V & PM across the lanes' words, then V = sum | (V & ~PM).
        typename W::template Reg<uint64_t> pm;
        typename W::template Reg<uint64_t> sum;
        typename W::template Reg<uint32_t> own_carry;
        w.each([&](int lane) {
          pm[lane] = word0 + lane < words ? pm_row[word0 + lane] : 0;
          uint64_t c = 0;
          sum[lane] = add_carry(v[k][lane], v[k][lane] & pm[lane], 0, &c);
          own_carry[lane] = static_cast<uint32_t>(c);
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

  typename W::template Reg<uint64_t> f_block;  // lane l: word `block_word` of F of column block_lo + l
  typename W::template Reg<Key> b_block;       // lane l: y'[block_lo + l]
  int block_lo = 0, block_word = -1;
  auto flat_word = [&](int col, int word) -> uint64_t {
    const int c = col - 1;  // columns only move down, so c < the block's end
    if (word != block_word || c < block_lo) {
      block_lo = c + 1 > kLanes ? c + 1 - kLanes : 0;
      block_word = word;
      const int lo = block_lo;
      w.each([&](int lane) {
        const int k = lo + lane;
        f_block[lane] = k <= c ? flat[int64_t(k) * words + word] : 0;
        b_block[lane] = k <= c ? static_cast<Key>(b[k]) : no_key<Key>();
      });
    }
    return w.shfl(f_block, c - block_lo);
  };
  auto match = [&](int i, int col) {  // called right after flat_word(col, .)
    const Key ai = kStaged ? staged[i - 1] : static_cast<Key>(a[i - 1]);
    return ai == w.shfl(b_block, col - 1 - block_lo);
  };
  return traceback(flat_word, match, m, n, mask_a, mask_b);
}

// LCS of a[0..len_a) and b[0..len_b) by one warp, with the lengths as given (unchecked).
// mask_a[0..M) and mask_b[0..N) are set to "is a difference token" (positions beyond the
// clamped lengths: false); `flat` holds N * ceil(M / 64) words of history; when kStaged,
// `staged` holds 64 * ceil(M / 64) slots of 8 bytes and `pm_block` kLanes * ceil(M / 64) words
// of shared memory, else y is read from `a` directly. Returns the LCS length (on every lane),
// or -1 when the pair is invalid: a length outside [0, width] or a negative id inside the
// lengths (the host raises; the masks then hold the clamped lengths only). kRounds: V words
// per lane the registers hold (ceil(ceil(M / 64) / 32) <= kRounds <= kMaxWordsPerLane); a
// smaller bound keeps fewer registers live.
template <bool kStaged, int kRounds, typename W, typename TA, typename TB, typename Mask>
DRIFT_HD int64_t warp_lcs(W& w, const TA* a, int64_t len_a, int64_t M, const TB* b, int64_t len_b, int64_t N,
                          void* staged, uint64_t* pm_block, Mask* mask_a, Mask* mask_b, uint64_t* flat) {
  const int m = static_cast<int>(len_a < 0 ? 0 : len_a > M ? M : len_a);
  const int n = static_cast<int>(len_b < 0 ? 0 : len_b > N ? N : len_b);
  // One pass over the ids in use: any negative (invalid), any beyond 32 bits (64-bit keys).
  typename W::template Reg<int> negative;
  typename W::template Reg<int> wide;
  w.each([&](int lane) {
    bool neg = false, big = false;
    for (int p = lane; p < m; p += kLanes) {
      const int64_t id = static_cast<int64_t>(a[p]);
      neg = neg || id < 0;
      big = big || id > INT32_MAX;
    }
    for (int j = lane; j < n; j += kLanes) {
      const int64_t id = static_cast<int64_t>(b[j]);
      neg = neg || id < 0;
      big = big || id > INT32_MAX;
    }
    negative[lane] = neg;
    wide[lane] = big;
  });
  const bool invalid = w.ballot([&](int lane) { return negative[lane] != 0; }) != 0 || m != len_a || n != len_b;
  const bool wide_keys = w.ballot([&](int lane) { return wide[lane] != 0; }) != 0;
  w.each([&](int lane) {
    for (int64_t i = lane; i < M; i += kLanes) mask_a[i] = Mask(i < m);
    for (int64_t j = lane; j < N; j += kLanes) mask_b[j] = Mask(j < n);
  });
  w.sync();
  if (invalid) return -1;
  if (m == 0 || n == 0) return 0;
  if (num_words(m) > int64_t(kRounds) * kLanes) return -1;  // the caller's bound is too small: never silently wrong
  if (wide_keys)
    return warp_lcs_keys<kStaged, kRounds>(w, a, m, b, n, static_cast<int64_t*>(staged), pm_block, mask_a, mask_b, flat);
  return warp_lcs_keys<kStaged, kRounds>(w, a, m, b, n, static_cast<int32_t*>(staged), pm_block, mask_a, mask_b, flat);
}

}  // namespace lcs
}  // namespace drift
