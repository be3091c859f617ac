// Longest common subsequence of two token sequences, bit-parallel, with a deterministic
// traceback into "difference token" masks (METHOD.md section 1, DESIGN.md section 2).
//
// Bit-parallel recurrence: Allison & Dix (1986), "A bit-string longest-common-subsequence
// algorithm", IPL 23; in the form of Hyyro (2004), "Bit-parallel LCS-length computation
// revisited" (AWOCA):
//     V_0 = ~0,   V_j = (V_{j-1} + (V_{j-1} & PM[b_j])) | (V_{j-1} & ~PM[b_j])
// where PM[t] has bit i set iff a_i == t. Bit i of V_j is 0 exactly when the DP row
// L(., j) steps up at i, i.e. L(i+1, j) = L(i, j) + 1. So column j of the whole DP table
// is recoverable from the M-bit word vector V_j alone: the traceback keeps one vector per
// column (N * ceil(M/64) words) instead of the (M+1)(N+1) table.
//
// Tie-break (shared bit for bit with drift.reference.lcs_mask): walk back from (M, N);
//   1. if a[i-1] == b[j-1], both tokens are in the LCS (a match is always optimal);
//   2. else if L(i-1, j) == L(i, j), a[i-1] is a difference token (step i -= 1);
//   3. else b[j-1] is a difference token (step j -= 1).
// Everything here is allocation-free inline code used by both the CPU and CUDA drivers.
#pragma once

#include <cstdint>

#include "drift/common.hpp"

namespace drift {
namespace lcs {

constexpr int kWordBits = 64;

DRIFT_HD int64_t num_words(int64_t m) { return (m + kWordBits - 1) / kWordBits; }

// One full-width add with carry: returns low word of v + x + carry_in, sets carry_out.
DRIFT_HD uint64_t add_carry(uint64_t v, uint64_t x, uint64_t carry_in, uint64_t* carry_out) {
  const uint64_t s1 = v + x;
  const uint64_t s = s1 + carry_in;
  *carry_out = static_cast<uint64_t>(s1 < v) | static_cast<uint64_t>(s < s1);
  return s;
}

// The new value of one word of V from its sum word: (V + X) | (V & ~PM).
DRIFT_HD uint64_t combine(uint64_t sum, uint64_t v, uint64_t pm) { return sum | (v & ~pm); }

// Serial column step V_{j-1} -> V_j over all `words` words (carry ripples from word 0 up).
// Bits at positions >= m of the last word hold garbage carries; nothing ever reads them.
DRIFT_HD void column_step(const uint64_t* v_prev, uint64_t* v_next, const uint64_t* pm, int64_t words) {
  uint64_t carry = 0;
  for (int64_t w = 0; w < words; ++w) {
    const uint64_t vw = v_prev[w];
    const uint64_t p = pm[w];
    const uint64_t s = add_carry(vw, vw & p, carry, &carry);
    v_next[w] = combine(s, vw, p);
  }
}

// Carry resolution across up to 32 parallel words (one per CUDA lane). `gen` has bit k set
// when word k's own sum overflowed, `prop` when its sum is all ones (a carry passes through);
// `carry_in` enters word 0. Returns the carry into each word (bit k) and sets `carry_out`,
// the carry leaving word 31. Treats (gen|prop) + gen as a 32-bit addition whose internal
// carries are exactly the word carries (the classic generate/propagate adder).
DRIFT_HD uint32_t resolve_carries(uint32_t gen, uint32_t prop, uint32_t carry_in, uint32_t* carry_out) {
  const uint64_t x = static_cast<uint64_t>(gen | prop);
  const uint64_t y = static_cast<uint64_t>(gen);
  const uint64_t s = x + y + carry_in;
  *carry_out = static_cast<uint32_t>((s >> 32) & 1u);
  return static_cast<uint32_t>((s ^ x ^ y) & 0xffffffffu);
}

// Count of leading zero bits of a 64-bit word (64 for 0).
DRIFT_HD int clz64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __clzll(static_cast<long long>(x));
#else
  return x ? __builtin_clzll(x) : 64;
#endif
}

// The traceback, skipping runs. Walks back from (m, n) with the tie-break above, reading two
// things through callables so that each driver keeps its own storage:
//   flat_word(j, w): word w of F_j = V_j & ~PM[b_{j-1}] (1 <=> step i -= 1: the DP column j is
//     flat at that row and a[i-1] does not match b[j-1]); j in [1, n], w < ceil(m / 64).
//   match(i, j): a[i-1] == b[j-1], asked only where F_j's bit i-1 is 0.
// In column j the walk drops the whole run of F-ones ending at bit i-1 at once (leading-zero
// count), then either matches (i, j) or steps j -= 1. I: the integer type of positions. Expects diff_a[0..m) and diff_b[0..n)
// pre-filled with true ("difference"); sets LCS tokens to false and returns the LCS length.
template <typename I, typename FlatWord, typename Match, typename Mask>
DRIFT_HD I traceback(FlatWord flat_word, Match match, I m, I n, Mask* diff_a, Mask* diff_b) {
  I i = m, j = n, length = 0;
  while (i > 0 && j > 0) {
    for (;;) {  // skip the run of F-ones ending at bit i-1
      const I w = (i - 1) >> 6;  // i >= 1: shifts are divisions
      const int p = static_cast<int>((i - 1) & (kWordBits - 1));
      // Bit 63 = position i-1; the run = leading ones of F from there (at most p + 1).
      const int run = clz64(~(flat_word(j, w) << (63 - p)));
      i -= run;
      if (run <= p || i == 0) break;  // stopped inside the word, or ran off the top
    }
    if (i == 0) break;
    if (match(i, j)) {
      diff_a[i - 1] = Mask(0);
      diff_b[j - 1] = Mask(0);
      --i;
      ++length;
    }
    --j;
  }
  return length;
}

}  // namespace lcs
}  // namespace drift
