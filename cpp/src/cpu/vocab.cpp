// CPU drivers of the fused vocabulary losses: token log-probs and OAL (drift/vocab.hpp).
//
// Work is split over the B*T rows of V logits on drift::parallel_for. A row is streamed in
// chunks of kChunk elements (widened to fp32 in a stack buffer for bf16/fp16); inside a chunk
// the loops run on SIMD vectors (GCC/Clang vector extensions, so no -ffast-math is needed:
// each lane's max/sum is an element-wise operation, not a reduction), and the lanes are summed
// in a fixed order: the output does not depend on the thread count (it may differ in the
// last bits between CPUs with different vector widths).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/parallel.hpp"
#include "drift/vocab.hpp"
#include "drivers.hpp"
#include "dtype_dispatch.hpp"
#include "validate.hpp"

namespace drift {

namespace {

using vocab::acc_t;
using vocab::bf16;
using vocab::fp16;
using vocab::narrow;

constexpr int64_t kChunk = 2048;

template <typename T> const T* row_ptr(const TensorView& logits, int64_t b, int64_t t) {
  return logits.ptr<T>() + b * logits.strides[0] + t * logits.strides[1];
}

// ---- row kernels ---------------------------------------------------------------------------
//
// Two operations touch all V logits of a row: its log-sum-exp and the scaled softmax the
// backward writes. For fp64 they run on kScalarLanes scalar accumulators (gradcheck only);
// for fp32/bf16/fp16 on vectors of W floats, where W is picked once per process from the CPU
// (16 with AVX-512, 8 with AVX2+FMA, else 4: SSE2/NEON). The bodies are templates that
// always inline into per-ISA entry points compiled with the matching target attribute.

constexpr int kScalarLanes = 16;

// Folds x[0, n) into the online log-sum-exp state: the chunk maximum first (lane-wise), then
// one rescale of the running sum and the chunk's sum of exp(x - m). fp64 version.
inline vocab::LseState<double> chunk_lse_scalar(const double* x, int64_t n, vocab::LseState<double> st) {
  double pm[kScalarLanes];
  for (int j = 0; j < kScalarLanes; ++j) pm[j] = -std::numeric_limits<double>::infinity();
  int64_t i = 0;
  for (; i + kScalarLanes <= n; i += kScalarLanes)
    for (int j = 0; j < kScalarLanes; ++j) pm[j] = vocab::running_max(pm[j], x[i + j]);
  for (; i < n; ++i) pm[0] = vocab::running_max(pm[0], x[i]);
  double cm = pm[0];
  for (int j = 1; j < kScalarLanes; ++j) cm = vocab::running_max(cm, pm[j]);
  return vocab::lse_fold_with(
      st, cm, [&] { return vocab::any_nan(x, n); },
      [&](double m, double s) {
        double ps[kScalarLanes];
        for (int j = 0; j < kScalarLanes; ++j) ps[j] = 0.0;
        int64_t k = 0;
        for (; k + kScalarLanes <= n; k += kScalarLanes)
          for (int j = 0; j < kScalarLanes; ++j) ps[j] += vocab::exp_fast(x[k + j] - m);
        for (; k < n; ++k) ps[0] += vocab::exp_fast(x[k] - m);
        return s + vocab::lane_tree_sum<kScalarLanes>(ps);
      });
}

double row_lse_f64(const double* row, int64_t V) {
  auto st = vocab::lse_empty<double>();
  for (int64_t c0 = 0; c0 < V; c0 += kChunk) st = chunk_lse_scalar(row + c0, std::min(kChunk, V - c0), st);
  return vocab::lse_value(st);
}

void row_scaled_softmax_f64(const double* row, int64_t V, double lse, double scale, double* out) {
  for (int64_t v = 0; v < V; ++v) out[v] = scale * vocab::exp_fast(row[v] - lse);
}

#if DRIFT_VECTOR_EXT
#define DRIFT_ALWAYS_INLINE inline __attribute__((always_inline))
// A lambda holding vector code inlines into the per-ISA entry point (it does not inherit its
// target attribute: out of line it would be compiled for the baseline ISA).
#define DRIFT_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))

template <int W> DRIFT_ALWAYS_INLINE typename vocab::Vec<W>::f load_v(const float* p) {
  typename vocab::Vec<W>::f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int W> DRIFT_ALWAYS_INLINE void store_v(float* p, const typename vocab::Vec<W>::f& v) {
  std::memcpy(p, &v, sizeof v);
}

// 16-bit logits widened to fp32 into buf, W lanes at a time (vocab::widen_bits, the code of
// vocab::to_float); fp32 logits are used in place.
template <int W, typename T> DRIFT_ALWAYS_INLINE const float* widen(const T* x, int64_t n, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    (void)n;
    (void)buf;
    return x;
  } else {
    int64_t i = 0;
    const auto* bits = reinterpret_cast<const uint16_t*>(x);
    for (; i + W <= n; i += W) {
      typename vocab::Vec<W>::h h;
      std::memcpy(&h, bits + i, sizeof h);
      store_v<W>(buf + i, vocab::widen_bits<T>(__builtin_convertvector(h, typename vocab::Vec<W>::u)));
    }
    for (; i < n; ++i) buf[i] = vocab::to_float(x[i]);
    return buf;
  }
}

// dst[0, n) = src rounded to T (bf16 W lanes at a time: vocab::bf16_bits, the code of
// vocab::to_bf16).
template <int W, typename T> DRIFT_ALWAYS_INLINE void narrow_into(const float* src, int64_t n, T* dst) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, bf16>) {
    auto* bits = reinterpret_cast<uint16_t*>(dst);
    for (; i + W <= n; i += W) {
      const auto h = __builtin_convertvector(vocab::bf16_bits(vocab::f2u(load_v<W>(src + i))), typename vocab::Vec<W>::h);
      std::memcpy(bits + i, &h, sizeof h);
    }
  }
  for (; i < n; ++i) dst[i] = vocab::from_float<T>(src[i]);
}

template <int W> DRIFT_ALWAYS_INLINE vocab::LseState<float> chunk_lse_v(const float* x, int64_t n, vocab::LseState<float> st) {
  using F = typename vocab::Vec<W>::f;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // Two accumulators per quantity hide the latency of the dependent max/add chains.
  F pm0 = F{} + neg_inf, pm1 = pm0;
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    pm0 = vocab::running_max(pm0, load_v<W>(x + i));
    pm1 = vocab::running_max(pm1, load_v<W>(x + i + W));
  }
  pm0 = vocab::running_max(pm0, pm1);
  float cm = neg_inf;
  for (int j = 0; j < W; ++j) cm = vocab::running_max(cm, pm0[j]);
  for (; i < n; ++i) cm = vocab::running_max(cm, x[i]);
  return vocab::lse_fold_with(
      st, cm, [&] { return vocab::any_nan(x, n); },
      [&](float m, float s) DRIFT_ALWAYS_INLINE_LAMBDA {
        F ps0 = F{}, ps1 = F{};
        int64_t k = 0;
        for (; k + 2 * W <= n; k += 2 * W) {
          ps0 += vocab::exp_fast(load_v<W>(x + k) - m);
          ps1 += vocab::exp_fast(load_v<W>(x + k + W) - m);
        }
        ps0 += ps1;
        float tail = 0.0f;
        for (; k < n; ++k) tail += vocab::exp_fast(x[k] - m);
        float lanes[W];
        std::memcpy(lanes, &ps0, sizeof lanes);
        return s + (vocab::lane_tree_sum<W>(lanes) + tail);
      });
}

template <int W, typename T> DRIFT_ALWAYS_INLINE float row_lse_v(const T* row, int64_t V) {
  alignas(64) float buf[kChunk];
  auto st = vocab::lse_empty<float>();
  for (int64_t c0 = 0; c0 < V; c0 += kChunk) {
    const int64_t n = std::min(kChunk, V - c0);
    st = chunk_lse_v<W>(widen<W>(row + c0, n, buf), n, st);
  }
  return vocab::lse_value(st);
}

template <int W, typename T>
DRIFT_ALWAYS_INLINE void row_scaled_softmax_v(const T* row, int64_t V, float lse, float scale, T* out) {
  alignas(64) float buf[kChunk];
  for (int64_t c0 = 0; c0 < V; c0 += kChunk) {
    const int64_t n = std::min(kChunk, V - c0);
    const float* x = widen<W>(row + c0, n, buf);
    float* o = nullptr;
    if constexpr (std::is_same_v<T, float>) o = out + c0;
    else o = buf;  // in place: element i is read before it is overwritten
    int64_t i = 0;
    for (; i + W <= n; i += W) store_v<W>(o + i, scale * vocab::exp_fast(load_v<W>(x + i) - lse));
    for (; i < n; ++i) o[i] = scale * vocab::exp_fast(x[i] - lse);
    if constexpr (!std::is_same_v<T, float>) narrow_into<W>(buf, n, out + c0);
  }
}

// Per-ISA entry points. DRIFT_OAL_ISA(suffix, W, attribute) defines, for each 16/32-bit
// logits type, row_lse_<type>_<suffix> and row_scaled_softmax_<type>_<suffix>.
#define DRIFT_OAL_ISA_TYPE(SUFFIX, W, ATTR, T, NAME)                                              \
  ATTR float row_lse_##NAME##_##SUFFIX(const T* row, int64_t V) { return row_lse_v<W>(row, V); } \
  ATTR void row_scaled_softmax_##NAME##_##SUFFIX(const T* row, int64_t V, float lse, float scale, T* out) { \
    row_scaled_softmax_v<W>(row, V, lse, scale, out);                                              \
  }
#define DRIFT_OAL_ISA(SUFFIX, W, ATTR)                  \
  DRIFT_OAL_ISA_TYPE(SUFFIX, W, ATTR, float, f32)       \
  DRIFT_OAL_ISA_TYPE(SUFFIX, W, ATTR, bf16, bf16)       \
  DRIFT_OAL_ISA_TYPE(SUFFIX, W, ATTR, fp16, f16)

DRIFT_OAL_ISA(base, 4, )
#if defined(__x86_64__)
#define DRIFT_OAL_X86_VARIANTS 1
DRIFT_OAL_ISA(avx2, 8, __attribute__((target("avx2,fma"))))
DRIFT_OAL_ISA(avx512, 16, __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))))
#endif

enum class Isa { kBase, kAvx2, kAvx512 };

// The widest variant this CPU runs; the environment variable DRIFT_CPU_ISA ("base", "avx2")
// caps it, so that tests can exercise the narrower variants on any machine.
Isa detect_isa() {
  Isa best = Isa::kBase;
#if defined(DRIFT_OAL_X86_VARIANTS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    best = Isa::kAvx512;
#endif
  const char* cap = std::getenv("DRIFT_CPU_ISA");
  if (cap != nullptr && std::strcmp(cap, "base") == 0) return Isa::kBase;
  if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best == Isa::kAvx512) return Isa::kAvx2;
  return best;
}

const Isa kIsa = detect_isa();

template <typename T> struct RowOps;
#define DRIFT_OAL_ROWOPS(T, NAME, AVX2_LSE, AVX2_SM, AVX512_LSE, AVX512_SM)                 \
  template <> struct RowOps<T> {                                                            \
    static float lse(const T* row, int64_t V) {                                             \
      switch (kIsa) {                                                                       \
        case Isa::kAvx512: return AVX512_LSE(row, V);                                       \
        case Isa::kAvx2: return AVX2_LSE(row, V);                                           \
        default: return row_lse_##NAME##_base(row, V);                                      \
      }                                                                                     \
    }                                                                                       \
    static void scaled_softmax(const T* row, int64_t V, float lse, float scale, T* out) {   \
      switch (kIsa) {                                                                       \
        case Isa::kAvx512: return AVX512_SM(row, V, lse, scale, out);                       \
        case Isa::kAvx2: return AVX2_SM(row, V, lse, scale, out);                           \
        default: return row_scaled_softmax_##NAME##_base(row, V, lse, scale, out);          \
      }                                                                                     \
    }                                                                                       \
  };
#if defined(DRIFT_OAL_X86_VARIANTS)
#define DRIFT_OAL_ROWOPS_FOR(T, NAME)                                                            \
  DRIFT_OAL_ROWOPS(T, NAME, row_lse_##NAME##_avx2, row_scaled_softmax_##NAME##_avx2,             \
                   row_lse_##NAME##_avx512, row_scaled_softmax_##NAME##_avx512)
#else
#define DRIFT_OAL_ROWOPS_FOR(T, NAME)                                                            \
  DRIFT_OAL_ROWOPS(T, NAME, row_lse_##NAME##_base, row_scaled_softmax_##NAME##_base,             \
                   row_lse_##NAME##_base, row_scaled_softmax_##NAME##_base)
#endif
DRIFT_OAL_ROWOPS_FOR(float, f32)
DRIFT_OAL_ROWOPS_FOR(bf16, bf16)
DRIFT_OAL_ROWOPS_FOR(fp16, f16)
#else
// No vector extensions (not GCC/Clang): scalar loops, the compiler vectorises what it can.
template <typename T> struct RowOps {
  static float lse(const T* row, int64_t V) {
    auto st = vocab::lse_empty<float>();
    for (int64_t v = 0; v < V; ++v) {
      const float x[1] = {vocab::to_float(row[v])};
      st = vocab::lse_fold(st, x, 1);
    }
    return vocab::lse_value(st);
  }
  static void scaled_softmax(const T* row, int64_t V, float lse, float scale, T* out) {
    for (int64_t v = 0; v < V; ++v) out[v] = narrow<T>(scale * vocab::exp_fast(vocab::to_float(row[v]) - lse));
  }
};
#endif

template <> struct RowOps<double> {
  static double lse(const double* row, int64_t V) { return row_lse_f64(row, V); }
  static void scaled_softmax(const double* row, int64_t V, double lse, double scale, double* out) {
    row_scaled_softmax_f64(row, V, lse, scale, out);
  }
};

template <typename T> acc_t<T> row_lse(const T* row, int64_t V) { return RowOps<T>::lse(row, V); }

// out[v] = scale * softmax(row)[v] = scale * exp(row[v] - lse) for every v, in T.
template <typename T> void row_scaled_softmax(const T* row, int64_t V, acc_t<T> lse, acc_t<T> scale, T* out) {
  RowOps<T>::scaled_softmax(row, V, lse, scale, out);
}

template <typename T> void zero_row(T* out, int64_t V) { std::memset(static_cast<void*>(out), 0, sizeof(T) * V); }

// ---- token log-probs ----------------------------------------------------------------------

template <typename T> void run_rows(const TokenLogpsForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t B = a.logits.shape[0], T_ = a.logits.shape[1], V = a.logits.shape[2];
  const int64_t* labels = a.labels.ptr<int64_t>();
  const bool* mask = a.mask.ptr<bool>();
  A* logps = a.logps.ptr<A>();
  A* lse = a.lse.ptr<A>();
  parallel_for(B * T_, get_num_threads(), [&](int, int64_t i) {
    if (!mask[i]) {
      logps[i] = A(0);
      lse[i] = A(0);
      return;
    }
    const T* row = row_ptr<T>(a.logits, i / T_, i % T_);
    const A l = row_lse(row, V);
    lse[i] = l;
    logps[i] = vocab::to_float(row[labels[i]]) - l;
  });
}

template <typename T> void run_rows(const TokenLogpsBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t B = a.logits.shape[0], T_ = a.logits.shape[1], V = a.logits.shape[2];
  const int64_t* labels = a.labels.ptr<int64_t>();
  const bool* mask = a.mask.ptr<bool>();
  const A* g = a.grad_logps.ptr<A>();
  const A* lse = a.lse.ptr<A>();
  T* grad = a.grad_logits.ptr<T>();
  parallel_for(B * T_, get_num_threads(), [&](int, int64_t i) {
    T* out = grad + i * V;
    if (!mask[i]) return zero_row(out, V);
    const T* row = row_ptr<T>(a.logits, i / T_, i % T_);
    row_scaled_softmax(row, V, lse[i], -g[i], out);
    const int64_t v = labels[i];
    out[v] = narrow<T>(g[i] - g[i] * vocab::exp_fast(vocab::to_float(row[v]) - lse[i]));
  });
}

// ---- OAL ----------------------------------------------------------------------------------

template <typename T> void run_rows(const OalForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t B = a.logits.shape[0], T_ = a.logits.shape[1], M = a.targets.shape[1];
  const int64_t V = a.logits.shape[2];
  const int64_t* targets = a.targets.ptr<int64_t>();
  const bool* pos_ok = a.logits_mask.ptr<bool>();
  const bool* tgt_ok = a.targets_mask.ptr<bool>();
  A* lse = a.lse.ptr<A>();
  A* target_logps = a.target_logps.ptr<A>();
  int64_t* argmax = a.argmax.ptr<int64_t>();
  const int threads = get_num_threads();

  // Pass 1: the row normalisers, the only pass over all B*T*V logits.
  parallel_for(B * T_, threads, [&](int, int64_t i) {
    lse[i] = pos_ok[i] ? row_lse(row_ptr<T>(a.logits, i / T_, i % T_), V) : A(0);
  });

  // Pass 2: per batch row, the max over valid positions for each distinct target id
  // (T loads per id). Sorting (id, slot) pairs finds the first slot of each id.
  parallel_for(B, threads, [&](int, int64_t b) {
    std::vector<std::pair<int64_t, int64_t>> ids;
    ids.reserve(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) {
      target_logps[b * M + m] = A(0);
      argmax[b * M + m] = -1;
      if (tgt_ok[b * M + m]) ids.emplace_back(targets[b * M + m], m);
    }
    std::sort(ids.begin(), ids.end());
    const bool* ok = pos_ok + b * T_;
    const A* row_lse_b = lse + b * T_;
    for (size_t k = 0; k < ids.size(); ++k) {
      if (k > 0 && ids[k].first == ids[k - 1].first) continue;  // a duplicate id counts once
      const int64_t v = ids[k].first, m = ids[k].second;
      A best = A(0);
      int64_t best_pos = -1;
      for (int64_t t = 0; t < T_; ++t) {
        if (!ok[t]) continue;
        const A val = vocab::to_float(row_ptr<T>(a.logits, b, t)[v]) - row_lse_b[t];
        if (vocab::argmax_takes(val, t, best, best_pos)) {
          best = val;
          best_pos = t;
        }
      }
      target_logps[b * M + m] = best_pos >= 0 ? best : A(0);
      argmax[b * M + m] = best_pos;
    }
  });
}

template <typename T> void run_rows(const OalBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t B = a.logits.shape[0], T_ = a.logits.shape[1], M = a.targets.shape[1];
  const int64_t V = a.logits.shape[2];
  const int64_t* targets = a.targets.ptr<int64_t>();
  const int64_t* argmax = a.argmax.ptr<int64_t>();
  const A* g = a.grad_target_logps.ptr<A>();
  const A* lse = a.lse.ptr<A>();
  T* grad = a.grad_logits.ptr<T>();
  parallel_for(B * T_, get_num_threads(), [&](int, int64_t i) {
    const int64_t b = i / T_, t = i % T_;
    T* out = grad + i * V;
    const int64_t* am = argmax + b * M;
    bool hit = false;
    A gsum = A(0);
    for (int64_t m = 0; m < M; ++m)
      if (am[m] == t) {
        hit = true;
        gsum += g[b * M + m];
      }
    if (!hit) return zero_row(out, V);
    const T* row = row_ptr<T>(a.logits, b, t);
    row_scaled_softmax(row, V, lse[i], -gsum, out);
    // Distinct ids have distinct slots, so each element gets at most one one-hot term.
    for (int64_t m = 0; m < M; ++m)
      if (am[m] == t) {
        const int64_t v = targets[b * M + m];
        out[v] = narrow<T>(g[b * M + m] - gsum * vocab::exp_fast(vocab::to_float(row[v]) - lse[i]));
      }
  });
}

}  // namespace

template <typename Args> void run_cpu(const Args& args) {
  validate(args, DeviceKind::kCPU);
  dispatch_logits_dtype(args.logits.dtype, [&](auto tag) { run_rows<typename decltype(tag)::type>(args); });
}

template void run_cpu(const TokenLogpsForwardArgs&);
template void run_cpu(const TokenLogpsBackwardArgs&);
template void run_cpu(const OalForwardArgs&);
template void run_cpu(const OalBackwardArgs&);

}  // namespace drift
