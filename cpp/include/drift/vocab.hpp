// The vocabulary math of the fused losses (OAL, METHOD.md section 2, and per-token log-probs),
// shared by the CPU drivers (cpu/vocab.cpp) and the CUDA kernels (cuda/vocab.cu): the 16-bit
// float conversions, exp, the online log-sum-exp and the arg-max rule. The conversions and
// the log-sum-exp fold are written once for scalars and (CPU) SIMD vectors alike.
//
// Both losses need log softmax(x)[v] = x[v] - lse(x) for a handful of ids v per row of V
// logits. Instead of materialising the (B, T, V) log-softmax we compute lse(x) in one pass
// with the online normaliser of Milakov & Gimelshein (2018, "Online normalizer calculation
// for softmax"): a running maximum m and a running sum s of exp(x - m), rescaled by
// exp(m_old - m_new) whenever the maximum grows; two partial states merge the same way, so the
// pass splits freely across SIMD lanes, chunks, threads and CUDA warps. Low-precision logits
// (bf16/fp16) are widened to fp32 and all accumulation runs in fp32 (fp64 for fp64 logits).
//
// Nothing here allocates or branches on data in a way a compiler cannot vectorise: the CPU
// drivers call these functions from fixed-width lane loops that gcc/clang turn into SIMD.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "drift/common.hpp"

// Host helpers on SIMD vectors must always inline: an out-of-line copy would pass vectors in
// registers the baseline ABI lacks (GCC warns, and it is slow).
#if defined(__CUDACC__) || !(defined(__GNUC__) || defined(__clang__))
#define DRIFT_HD_SIMD DRIFT_HD
#else
#define DRIFT_HD_SIMD inline __attribute__((always_inline))
#endif

namespace drift {
namespace vocab {

// 16-bit storage types (bit patterns only; arithmetic always happens in fp32).
struct bf16 { uint16_t bits; };
struct fp16 { uint16_t bits; };

// The bits of a float as an integer and back (the CUDA intrinsics on the device).
template <typename To, typename From> DRIFT_HD To bit_cast(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: sizes differ");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<To, float>) return __uint_as_float(x);
  else return __float_as_uint(x);
#else
  To y;
  std::memcpy(&y, &x, sizeof y);
  return y;
#endif
}

DRIFT_HD uint32_t f2u(float f) { return bit_cast<uint32_t>(f); }
DRIFT_HD float u2f(uint32_t u) { return bit_cast<float>(u); }

// Lane-generic helpers, so that one piece of arithmetic serves scalars (CPU tails, CUDA) and,
// on CPU, GCC/Clang vectors of W floats (the SIMD loops of cpu/vocab.cpp: W = 4 for the
// baseline SSE2/NEON build, 8 and 16 in the AVX2 and AVX-512 variants it selects at run time).
DRIFT_HD float splat_f(float c, float) { return c; }
DRIFT_HD uint32_t splat_u(uint32_t c, float) { return c; }
template <typename S> DRIFT_HD S select(bool c, S a, S b) { return c ? a : b; }

#if !defined(__CUDACC__) && (defined(__GNUC__) || defined(__clang__))
#define DRIFT_VECTOR_EXT 1
// Every function taking a vector is always inlined into a caller compiled for a wide enough
// instruction set; the "ABI changed" note GCC emits for wide vector parameters is irrelevant.
#pragma GCC diagnostic ignored "-Wpsabi"
template <int W> struct Vec;
#define DRIFT_VOCAB_VEC(W)                                                                          \
  typedef float vfloat##W __attribute__((vector_size(4 * W)));                                      \
  typedef uint32_t vuint##W __attribute__((vector_size(4 * W)));                                    \
  typedef int32_t vmask##W __attribute__((vector_size(4 * W)));                                     \
  typedef uint16_t vhalf##W __attribute__((vector_size(2 * W)));                                    \
  template <> struct Vec<W> {                                                                       \
    using f = vfloat##W;                                                                            \
    using u = vuint##W;                                                                             \
    using h = vhalf##W;                                                                             \
  };                                                                                                \
  DRIFT_HD_SIMD vfloat##W splat_f(float c, const vfloat##W&) { return vfloat##W{} + c; }            \
  DRIFT_HD_SIMD vuint##W splat_u(uint32_t c, const vfloat##W&) { return vuint##W{} + c; }           \
  DRIFT_HD_SIMD vuint##W f2u(const vfloat##W& f) { return reinterpret_cast<vuint##W>(f); }          \
  DRIFT_HD_SIMD vfloat##W u2f(const vuint##W& u) { return reinterpret_cast<vfloat##W>(u); }         \
  DRIFT_HD_SIMD vuint##W select(const vmask##W& c, const vuint##W& a, const vuint##W& b) {          \
    const vuint##W m = reinterpret_cast<vuint##W>(c);                                               \
    return (m & a) | (~m & b);                                                                      \
  }                                                                                                 \
  DRIFT_HD_SIMD vfloat##W select(const vmask##W& c, const vfloat##W& a, const vfloat##W& b) {       \
    return u2f(select(c, f2u(a), f2u(b)));                                                          \
  }
DRIFT_VOCAB_VEC(4)
DRIFT_VOCAB_VEC(8)
DRIFT_VOCAB_VEC(16)
#undef DRIFT_VOCAB_VEC
#endif

// The running maximum: x replaces m when larger (a NaN x never does, so NaN never becomes the max).
template <typename F> DRIFT_HD_SIMD F running_max(const F& m, const F& x) { return select(x > m, x, m); }

// ---- 16-bit floats ------------------------------------------------------------------------
//
// Written on the bits, for U = uint32_t (one value, in the low 16 bits) or (CPU) a vector of
// uint32 lanes: the scalar conversions below and the SIMD loops of cpu/vocab.cpp are the same
// code.

// 16-bit bits -> fp32. bf16 is the top half of an fp32: widening is a shift. IEEE half without
// tables or branches: place exponent and mantissa in the fp32 field (shifted by 23 - 10 bits)
// and multiply by 2^(127 - 15) to re-bias the exponent. The multiplication also normalises
// half subnormals exactly. Inf/NaN (exponent 31) would land at a finite exponent, so their
// exponent field is forced to all ones.
template <typename T, typename U> DRIFT_HD_SIMD auto widen_bits(const U& h) {
  if constexpr (std::is_same_v<T, bf16>) {
    return u2f(h << 16);
  } else {
    static_assert(std::is_same_v<T, fp16>, "widen_bits: bf16 or fp16");
    const U magnitude = (h & 0x7fffu) << 13;
    const U sign = (h & 0x8000u) << 16;
    const auto scaled = u2f(magnitude) * 5.192296858534828e33f;  // 2^112
    const U special = select((h & 0x7c00u) == 0x7c00u, magnitude | 0x7f800000u, f2u(scaled));
    return u2f(special | sign);
  }
}

// fp32 bits -> bf16 bits (in the low 16 bits), round to nearest even; NaN stays a (quiet) NaN.
template <typename U> DRIFT_HD_SIMD U bf16_bits(const U& u) {
  return select((u & 0x7fffffffu) > 0x7f800000u, (u >> 16) | 0x40u, (u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

DRIFT_HD float to_float(bf16 h) { return widen_bits<bf16>(static_cast<uint32_t>(h.bits)); }
DRIFT_HD float to_float(fp16 h) { return widen_bits<fp16>(static_cast<uint32_t>(h.bits)); }
DRIFT_HD float to_float(float x) { return x; }
DRIFT_HD double to_float(double x) { return x; }

DRIFT_HD bf16 to_bf16(float f) { return bf16{static_cast<uint16_t>(bf16_bits(f2u(f)))}; }

// fp32 -> IEEE half, round to nearest even, overflow to inf, underflow through subnormals.
DRIFT_HD fp16 to_fp16(float f) {
  const uint32_t u = f2u(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return fp16{static_cast<uint16_t>(sign | 0x7e00u)};  // NaN
  if (a >= 0x477ff000u) return fp16{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520: inf
  if (a < 0x38800000u) {
    // Below the smallest normal half (2^-14): the result is subnormal (or zero). Adding
    // 0.5 (2^-1) aligns the mantissa so that the fp32 adder rounds at the half subnormal
    // quantum 2^-24, to nearest even; the low bits are then the half's mantissa.
    const float shifted = u2f(a) + 0.5f;
    return fp16{static_cast<uint16_t>(sign | static_cast<uint16_t>(f2u(shifted) - 0x3f000000u))};
  }
  // Normal: re-bias the exponent (127 - 15) and round the 13 dropped mantissa bits.
  const uint32_t rebiased = a - (static_cast<uint32_t>(112) << 23);
  const uint32_t rounded = rebiased + 0xfffu + ((rebiased >> 13) & 1u);
  return fp16{static_cast<uint16_t>(sign | (rounded >> 13))};
}

template <typename T> DRIFT_HD T from_float(float f);
template <> DRIFT_HD float from_float<float>(float f) { return f; }
template <> DRIFT_HD bf16 from_float<bf16>(float f) { return to_bf16(f); }
template <> DRIFT_HD fp16 from_float<fp16>(float f) { return to_fp16(f); }

// The accumulation type of a logits type: fp64 for fp64, fp32 otherwise.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

// An accumulator value stored as a T (gradients are written in the logits' dtype).
template <typename T> DRIFT_HD T narrow(acc_t<T> x) {
  if constexpr (std::is_same_v<T, double>) return x;
  else return from_float<T>(x);
}

// exp(x) in fp32 without libm, so that loops over it vectorise: x = n ln2 + r with
// |r| <= ln2/2 (Cody-Waite split of ln2 into a short head and a tail, so n * ln2_hi is exact),
// exp(r) by its degree-7 Taylor polynomial (truncation error < 1e-8 relative, below fp32
// rounding), 2^n assembled in the exponent field. n is rounded with the 1.5 * 2^23 trick: the
// low mantissa bits of x * log2(e) + 1.5 * 2^23 hold n, read back without a float->int cast
// (no undefined behaviour for NaN). x < -87 returns 0 (below fp32's normal range: harmless for
// a softmax), x > 88 returns inf, NaN stays NaN. F is float or (CPU) vfloat.
template <typename F> DRIFT_HD_SIMD F exp_fast(const F& x) {
  const F lo = splat_f(-87.0f, x), hi = splat_f(88.0f, x), shifter = splat_f(12582912.0f, x);  // 1.5 * 2^23
  F c = select(x < lo, lo, x);
  c = select(c > hi, hi, c);
  const F t = c * splat_f(1.44269504088896341f, x) + shifter;
  const F n = t - shifter;
  F r = c - n * splat_f(0.693359375f, x);  // ln2 head: 9 significant bits
  r = r - n * splat_f(-2.12194440e-4f, x);  // ln2 tail
  F p = splat_f(1.0f / 5040.0f, x);
  p = p * r + splat_f(1.0f / 720.0f, x);
  p = p * r + splat_f(1.0f / 120.0f, x);
  p = p * r + splat_f(1.0f / 24.0f, x);
  p = p * r + splat_f(1.0f / 6.0f, x);
  p = p * r + splat_f(0.5f, x);
  p = p * r + splat_f(1.0f, x);
  p = p * r + splat_f(1.0f, x);
  // 2^n with n in [-126, 127]: (n + 127) in the exponent field.
  const auto biased = (f2u(t) - splat_u(0x4b400000u - 127u, x)) << 23;
  F e = p * u2f(biased);
  e = select(x < lo, splat_f(0.0f, x), e);
  e = select(x > hi, splat_f(INFINITY, x), e);
  return e;
}

#if defined(__CUDA_ARCH__)
// On the GPU exp(x) is the special-function unit's ex2 (__expf: x * log2(e), then ex2.approx;
// relative error ~2^-21 over a softmax's range, x <= 0), two instructions instead of the
// polynomial's ~20: with the polynomial the row kernels were bound by instruction issue, not
// by memory. Same edge cases: -inf and x < -87 give 0 (flushed), +inf gives inf, NaN stays NaN.
__device__ __forceinline__ float exp_fast(float x) { return __expf(x); }
#endif

DRIFT_HD double exp_fast(double x) { return exp(x); }

DRIFT_HD float log_acc(float x) { return logf(x); }
DRIFT_HD double log_acc(double x) { return log(x); }

// Online log-sum-exp state: max m and sum s of exp(x - m) over the elements seen. The empty
// state is (-inf, 0). NaN inputs make s NaN (exp(NaN - m)), which survives every merge.
template <typename A> struct LseState {
  A m;
  A s;
};

template <typename A> DRIFT_HD LseState<A> lse_empty() { return {-static_cast<A>(INFINITY), A(0)}; }

// Rescale s from max `from` to max `to` (to >= from). A state still at -inf has s == 0 and
// needs no rescaling (exp(-inf - -inf) would be NaN).
template <typename A> DRIFT_HD A lse_rescale(A s, A from, A to) { return from == to ? s : s * exp_fast(from - to); }

template <typename A> DRIFT_HD LseState<A> lse_merge(LseState<A> a, LseState<A> b) {
  const A m = a.m > b.m ? a.m : b.m;
  return {m, lse_rescale(a.s, a.m, m) + lse_rescale(b.s, b.m, m)};
}

// log(sum exp(x)) of the state; -inf for an empty row, NaN when any input was NaN (or +inf).
template <typename A> DRIFT_HD A lse_value(LseState<A> st) { return st.m + log_acc(st.s); }

// True when any of x[0, n) is NaN.
template <typename A, typename N> DRIFT_HD bool any_nan(const A* x, N n) {
  bool nan = false;
  for (N i = 0; i < n; ++i) nan = nan || x[i] != x[i];
  return nan;
}

// Sums lanes[0, W) pairwise into lanes[0] (W a power of two): the fixed order in which the
// CPU drivers add their SIMD lanes.
template <int W, typename A> DRIFT_HD A lane_tree_sum(A* lanes) {
  for (int w = W / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lanes[j] += lanes[j + w];
  return lanes[0];
}

// One step of every online log-sum-exp fold (CUDA threads, CPU chunks and SIMD lanes): a batch
// of elements with maximum `batch_max` joins the state. While the max is still -inf (only -inf
// and NaN seen) the sum is kept, or turns NaN if `any_nan()`; otherwise `add(m, s)` returns the
// running sum `s`, already rescaled to the new max m, plus the batch's exp(x - m) (each caller
// keeps its own summation order).
template <typename A, typename AnyNan, typename Add>
DRIFT_HD_SIMD LseState<A> lse_fold_with(LseState<A> st, A batch_max, AnyNan any_nan_fn, Add add) {
  const A m = batch_max > st.m ? batch_max : st.m;
  if (m == -static_cast<A>(INFINITY)) return {m, any_nan_fn() ? static_cast<A>(NAN) : st.s};
  return {m, add(m, lse_rescale(st.s, st.m, m))};
}

// Folds x[0, n) into an online log-sum-exp state: their max first, then one rescale of the
// running sum and the sum of exp(x - m) in order (the per-thread step of the CUDA row kernels).
template <typename A, int N> DRIFT_HD LseState<A> lse_fold(LseState<A> st, const A (&x)[N], int n) {
  A cm = -static_cast<A>(INFINITY);
  for (int i = 0; i < n; ++i) cm = running_max(cm, x[i]);
  return lse_fold_with(
      st, cm, [&] { return any_nan(x, n); },
      [&](A m, A s) {
        for (int i = 0; i < n; ++i) s += exp_fast(x[i] - m);
        return s;
      });
}

// The running arg-max of the OAL forward: position `pos` with value `val` replaces the best
// so far if none yet, if it is NaN (NaN propagates like torch.max; the first NaN wins), or if it
// is strictly larger (so ties keep the lowest position, the rule of METHOD.md section 2).
// Callers visit positions in increasing order, or merge with `argmax_merge`.
template <typename A> DRIFT_HD bool argmax_takes(A val, int64_t pos, A best, int64_t best_pos) {
  if (best_pos < 0) return true;
  if (best != best) return false;
  if (val != val) return true;
  return val > best || (val == best && pos < best_pos);
}

// Combines two partial arg-maxes (from disjoint position sets) with the same rule.
template <typename A> DRIFT_HD void argmax_merge(A& best, int64_t& best_pos, A val, int64_t pos) {
  if (pos < 0) return;
  bool take;
  if (best_pos < 0) take = true;
  else if (best != best && val != val) take = pos < best_pos;
  else if (best != best) take = false;
  else if (val != val) take = true;
  else take = val > best || (val == best && pos < best_pos);
  if (take) {
    best = val;
    best_pos = pos;
  }
}

}  // namespace vocab
}  // namespace drift
