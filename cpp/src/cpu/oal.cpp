// CPU drivers of the fused vocabulary losses: token log-probs and OAL (drift/oal.hpp).
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
#include "drift/oal.hpp"
#include "drivers.hpp"

namespace drift {

namespace {

using oal::acc_t;
using oal::bf16;
using oal::fp16;

constexpr int64_t kChunk = 2048;

DType acc_dtype(DType logits) { return logits == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32; }

// The sizes every other argument of an op is checked against, read off its checked logits.
struct LogitsDims {
  int64_t B, T, V;
  DType acc;  // dtype of log-probs, lse and upstream gradients
  int dev;    // device ordinal
};

// logits: rank 3, floating, on `device`, unit stride along V; strides along B and T are free
// (so that views like logits[:, :-1] need no copy).
LogitsDims expect_logits(const TensorView& v, DeviceKind device) {
  if (v.shape.size() != 3) fail("logits: expected rank 3 (B, T, V), got rank " + std::to_string(v.shape.size()));
  if (v.dtype != DType::kFloat32 && v.dtype != DType::kBFloat16 && v.dtype != DType::kFloat16 &&
      v.dtype != DType::kFloat64)
    fail(std::string("logits: unexpected dtype ") + dtype_name(v.dtype) + " (float32, bfloat16, float16, float64)");
  if (v.device != device) fail("logits: on the wrong device");
  if (v.shape[2] < 1) fail("logits: the vocabulary dimension V must be >= 1");
  // An empty tensor is never read: any strides will do (torch gives them arbitrary ones).
  if (v.numel() > 0) {
    if (v.shape[2] > 1 && v.strides[2] != 1) fail("logits: the vocabulary dimension must have unit stride");
    for (int d = 0; d < 2; ++d)
      if (v.shape[d] > 1 && v.strides[d] < 0) fail("logits: negative strides are not supported");
  }
  return {v.shape[0], v.shape[1], v.shape[2], acc_dtype(v.dtype), v.device_id};
}

// Ids of the valid entries must lie in [0, V): checked before any row is touched.
void expect_ids_in_range(const TensorView& ids, const TensorView& mask, int64_t V, const char* arg) {
  const int64_t* id = ids.ptr<int64_t>();
  const bool* ok = mask.ptr<bool>();
  for (int64_t i = 0, n = ids.numel(); i < n; ++i)
    if (ok[i] && (id[i] < 0 || id[i] >= V))
      fail(std::string(arg) + ": id " + std::to_string(id[i]) + " outside [0, " + std::to_string(V) + ")");
}

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

template <typename A> oal::LseState<A> fold_all_neg_inf(const A* x, int64_t n, oal::LseState<A> st) {
  // Only -inf (or NaN) so far: exp(x - m) would be NaN for every -inf; remember real NaNs.
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) nan = nan || x[i] != x[i];
  return {st.m, nan ? std::numeric_limits<A>::quiet_NaN() : st.s};
}

// Folds x[0, n) into the online log-sum-exp state: the chunk maximum first (lane-wise), then
// one rescale of the running sum and the chunk's sum of exp(x - m). fp64 version.
inline oal::LseState<double> chunk_lse_scalar(const double* x, int64_t n, oal::LseState<double> st) {
  const double neg_inf = -std::numeric_limits<double>::infinity();
  double pm[kScalarLanes];
  for (int j = 0; j < kScalarLanes; ++j) pm[j] = neg_inf;
  int64_t i = 0;
  for (; i + kScalarLanes <= n; i += kScalarLanes)
    for (int j = 0; j < kScalarLanes; ++j) pm[j] = x[i + j] > pm[j] ? x[i + j] : pm[j];
  for (; i < n; ++i) pm[0] = x[i] > pm[0] ? x[i] : pm[0];
  double cm = pm[0];
  for (int j = 1; j < kScalarLanes; ++j) cm = pm[j] > cm ? pm[j] : cm;
  const double m = cm > st.m ? cm : st.m;
  if (m == neg_inf) return fold_all_neg_inf(x, n, st);
  double ps[kScalarLanes];
  for (int j = 0; j < kScalarLanes; ++j) ps[j] = 0.0;
  for (i = 0; i + kScalarLanes <= n; i += kScalarLanes)
    for (int j = 0; j < kScalarLanes; ++j) ps[j] += oal::exp_fast(x[i + j] - m);
  for (; i < n; ++i) ps[0] += oal::exp_fast(x[i] - m);
  for (int w = kScalarLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) ps[j] += ps[j + w];
  return {m, oal::lse_rescale(st.s, st.m, m) + ps[0]};
}

double row_lse_f64(const double* row, int64_t V) {
  auto st = oal::lse_empty<double>();
  for (int64_t c0 = 0; c0 < V; c0 += kChunk) st = chunk_lse_scalar(row + c0, std::min(kChunk, V - c0), st);
  return oal::lse_value(st);
}

void row_scaled_softmax_f64(const double* row, int64_t V, double lse, double scale, double* out) {
  for (int64_t v = 0; v < V; ++v) out[v] = scale * oal::exp_fast(row[v] - lse);
}

#if DRIFT_VECTOR_EXT
#define DRIFT_ALWAYS_INLINE inline __attribute__((always_inline))

template <int W> DRIFT_ALWAYS_INLINE typename oal::Vec<W>::f load_v(const float* p) {
  typename oal::Vec<W>::f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int W> DRIFT_ALWAYS_INLINE void store_v(float* p, const typename oal::Vec<W>::f& v) {
  std::memcpy(p, &v, sizeof v);
}

// 16-bit logits widened to fp32 into buf, W lanes at a time (the bit arithmetic of
// oal::to_float); fp32 logits are used in place.
template <int W, typename T> DRIFT_ALWAYS_INLINE const float* widen(const T* x, int64_t n, float* buf) {
  using U = typename oal::Vec<W>::u;
  using F = typename oal::Vec<W>::f;
  if constexpr (std::is_same_v<T, float>) {
    (void)n;
    (void)buf;
    return x;
  } else {
    int64_t i = 0;
    const auto* bits = reinterpret_cast<const uint16_t*>(x);
    for (; i + W <= n; i += W) {
      typename oal::Vec<W>::h h;
      std::memcpy(&h, bits + i, sizeof h);
      const U u = __builtin_convertvector(h, U);
      if constexpr (std::is_same_v<T, bf16>) {
        store_v<W>(buf + i, oal::u2f(u << 16));
      } else {
        const U magnitude = (u & 0x7fffu) << 13;
        const U sign = (u & 0x8000u) << 16;
        const F scaled = oal::u2f(magnitude) * 5.192296858534828e33f;  // 2^112
        const F special = oal::u2f(magnitude | 0x7f800000u);
        const F out = oal::select((u & 0x7c00u) == 0x7c00u, special, scaled);
        store_v<W>(buf + i, oal::u2f(oal::f2u(out) | sign));
      }
    }
    for (; i < n; ++i) buf[i] = oal::to_float(x[i]);
    return buf;
  }
}

// dst[0, n) = src rounded to T (bf16 W lanes at a time, the arithmetic of oal::to_bf16).
template <int W, typename T> DRIFT_ALWAYS_INLINE void narrow_into(const float* src, int64_t n, T* dst) {
  using U = typename oal::Vec<W>::u;
  int64_t i = 0;
  if constexpr (std::is_same_v<T, bf16>) {
    auto* bits = reinterpret_cast<uint16_t*>(dst);
    for (; i + W <= n; i += W) {
      const U u = oal::f2u(load_v<W>(src + i));
      const U nan = reinterpret_cast<U>((u & 0x7fffffffu) > 0x7f800000u);
      const U rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
      const U out = (nan & ((u >> 16) | 0x40u)) | (~nan & rounded);
      const auto h = __builtin_convertvector(out, typename oal::Vec<W>::h);
      std::memcpy(bits + i, &h, sizeof h);
    }
  }
  for (; i < n; ++i) dst[i] = oal::from_float<T>(src[i]);
}

template <int W> DRIFT_ALWAYS_INLINE oal::LseState<float> chunk_lse_v(const float* x, int64_t n, oal::LseState<float> st) {
  using F = typename oal::Vec<W>::f;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // Two accumulators per quantity hide the latency of the dependent max/add chains.
  F pm0 = F{} + neg_inf, pm1 = pm0;
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const F a = load_v<W>(x + i), b = load_v<W>(x + i + W);
    pm0 = oal::select(a > pm0, a, pm0);
    pm1 = oal::select(b > pm1, b, pm1);
  }
  pm0 = oal::select(pm1 > pm0, pm1, pm0);
  float cm = neg_inf;
  for (int j = 0; j < W; ++j) cm = pm0[j] > cm ? pm0[j] : cm;
  for (; i < n; ++i) cm = x[i] > cm ? x[i] : cm;
  const float m = cm > st.m ? cm : st.m;
  if (m == neg_inf) return fold_all_neg_inf(x, n, st);
  F ps0 = F{}, ps1 = F{};
  for (i = 0; i + 2 * W <= n; i += 2 * W) {
    ps0 += oal::exp_fast(load_v<W>(x + i) - m);
    ps1 += oal::exp_fast(load_v<W>(x + i + W) - m);
  }
  ps0 += ps1;
  float tail = 0.0f;
  for (; i < n; ++i) tail += oal::exp_fast(x[i] - m);
  float lanes[W];
  std::memcpy(lanes, &ps0, sizeof lanes);
  for (int w = W / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lanes[j] += lanes[j + w];
  return {m, oal::lse_rescale(st.s, st.m, m) + (lanes[0] + tail)};
}

template <int W, typename T> DRIFT_ALWAYS_INLINE float row_lse_v(const T* row, int64_t V) {
  alignas(64) float buf[kChunk];
  auto st = oal::lse_empty<float>();
  for (int64_t c0 = 0; c0 < V; c0 += kChunk) {
    const int64_t n = std::min(kChunk, V - c0);
    st = chunk_lse_v<W>(widen<W>(row + c0, n, buf), n, st);
  }
  return oal::lse_value(st);
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
    for (; i + W <= n; i += W) store_v<W>(o + i, scale * oal::exp_fast(load_v<W>(x + i) - lse));
    for (; i < n; ++i) o[i] = scale * oal::exp_fast(x[i] - lse);
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
    auto st = oal::lse_empty<float>();
    for (int64_t v = 0; v < V; ++v) {
      const float x[1] = {oal::to_float(row[v])};
      const float m = x[0] > st.m ? x[0] : st.m;
      if (m == -std::numeric_limits<float>::infinity()) st = fold_all_neg_inf(x, 1, st);
      else st = {m, oal::lse_rescale(st.s, st.m, m) + oal::exp_fast(x[0] - m)};
    }
    return oal::lse_value(st);
  }
  static void scaled_softmax(const T* row, int64_t V, float lse, float scale, T* out) {
    for (int64_t v = 0; v < V; ++v) out[v] = oal::from_float<T>(scale * oal::exp_fast(oal::to_float(row[v]) - lse));
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

template <typename T> T narrow(acc_t<T> x) {
  if constexpr (std::is_same_v<T, double>) return x;
  else return oal::from_float<T>(x);
}

// ---- token log-probs ----------------------------------------------------------------------

template <typename T> void token_logps_forward(const TokenLogpsForwardArgs& a) {
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
    logps[i] = oal::to_float(row[labels[i]]) - l;
  });
}

template <typename T> void token_logps_backward(const TokenLogpsBackwardArgs& a) {
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
    out[v] = narrow<T>(g[i] - g[i] * oal::exp_fast(oal::to_float(row[v]) - lse[i]));
  });
}

// ---- OAL ----------------------------------------------------------------------------------

template <typename T> void oal_forward(const OalForwardArgs& a) {
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
        const A val = oal::to_float(row_ptr<T>(a.logits, b, t)[v]) - row_lse_b[t];
        if (oal::argmax_takes(val, t, best, best_pos)) {
          best = val;
          best_pos = t;
        }
      }
      target_logps[b * M + m] = best_pos >= 0 ? best : A(0);
      argmax[b * M + m] = best_pos;
    }
  });
}

template <typename T> void oal_backward(const OalBackwardArgs& a) {
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
        out[v] = narrow<T>(g[b * M + m] - gsum * oal::exp_fast(oal::to_float(row[v]) - lse[i]));
      }
  });
}

template <template <typename> class Fn, typename Args> void dispatch(DType dtype, const Args& args) {
  switch (dtype) {
    case DType::kFloat32: return Fn<float>::run(args);
    case DType::kFloat64: return Fn<double>::run(args);
    case DType::kBFloat16: return Fn<bf16>::run(args);
    case DType::kFloat16: return Fn<fp16>::run(args);
    default: fail(std::string("logits: unexpected dtype ") + dtype_name(dtype));
  }
}

template <typename T> struct TokenFwd { static void run(const TokenLogpsForwardArgs& a) { token_logps_forward<T>(a); } };
template <typename T> struct TokenBwd { static void run(const TokenLogpsBackwardArgs& a) { token_logps_backward<T>(a); } };
template <typename T> struct OalFwd { static void run(const OalForwardArgs& a) { oal_forward<T>(a); } };
template <typename T> struct OalBwd { static void run(const OalBackwardArgs& a) { oal_backward<T>(a); } };

}  // namespace

// ---- validation (shared with the CUDA launchers) -------------------------------------------

void validate_token_logps_forward(const TokenLogpsForwardArgs& a, DeviceKind device) {
  const auto [B, T, V, acc, dev] = expect_logits(a.logits, device);
  expect(a.labels, "labels", {DType::kInt64}, {B, T}, device, dev);
  expect(a.mask, "mask", {DType::kBool}, {B, T}, device, dev);
  expect(a.logps, "logps", {acc}, {B, T}, device, dev);
  expect(a.lse, "lse", {acc}, {B, T}, device, dev);
  if (device == DeviceKind::kCPU) expect_ids_in_range(a.labels, a.mask, V, "labels");
}

void validate_token_logps_backward(const TokenLogpsBackwardArgs& a, DeviceKind device) {
  const auto [B, T, V, acc, dev] = expect_logits(a.logits, device);
  expect(a.grad_logps, "grad_logps", {acc}, {B, T}, device, dev);
  expect(a.labels, "labels", {DType::kInt64}, {B, T}, device, dev);
  expect(a.mask, "mask", {DType::kBool}, {B, T}, device, dev);
  expect(a.lse, "lse", {acc}, {B, T}, device, dev);
  expect(a.grad_logits, "grad_logits", {a.logits.dtype}, {B, T, V}, device, dev);
  if (device == DeviceKind::kCPU) expect_ids_in_range(a.labels, a.mask, V, "labels");
}

void validate_oal_forward(const OalForwardArgs& a, DeviceKind device) {
  const auto [B, T, V, acc, dev] = expect_logits(a.logits, device);
  if (a.targets.shape.size() != 2) fail("targets: expected rank 2 (B, M)");
  const int64_t M = a.targets.shape[1];
  expect(a.targets, "targets", {DType::kInt64}, {B, M}, device, dev);
  expect(a.logits_mask, "logits_mask", {DType::kBool}, {B, T}, device, dev);
  expect(a.targets_mask, "targets_mask", {DType::kBool}, {B, M}, device, dev);
  expect(a.target_logps, "target_logps", {acc}, {B, M}, device, dev);
  expect(a.lse, "lse", {acc}, {B, T}, device, dev);
  expect(a.argmax, "argmax", {DType::kInt64}, {B, M}, device, dev);
  if (device == DeviceKind::kCPU) expect_ids_in_range(a.targets, a.targets_mask, V, "targets");
}

void validate_oal_backward(const OalBackwardArgs& a, DeviceKind device) {
  const auto [B, T, V, acc, dev] = expect_logits(a.logits, device);
  if (a.targets.shape.size() != 2) fail("targets: expected rank 2 (B, M)");
  const int64_t M = a.targets.shape[1];
  expect(a.grad_target_logps, "grad_target_logps", {acc}, {B, M}, device, dev);
  expect(a.targets, "targets", {DType::kInt64}, {B, M}, device, dev);
  expect(a.lse, "lse", {acc}, {B, T}, device, dev);
  expect(a.argmax, "argmax", {DType::kInt64}, {B, M}, device, dev);
  expect(a.grad_logits, "grad_logits", {a.logits.dtype}, {B, T, V}, device, dev);
  if (device == DeviceKind::kCPU) {
    // A slot with argmax >= 0 names a position and a target id the backward dereferences.
    const int64_t* am = a.argmax.ptr<int64_t>();
    const int64_t* id = a.targets.ptr<int64_t>();
    for (int64_t i = 0; i < B * M; ++i) {
      if (am[i] < -1 || am[i] >= T) fail("argmax: position " + std::to_string(am[i]) + " outside [-1, T)");
      if (am[i] >= 0 && (id[i] < 0 || id[i] >= V))
        fail("targets: id " + std::to_string(id[i]) + " outside [0, " + std::to_string(V) + ")");
    }
  }
}

void token_logps_forward_cpu(const TokenLogpsForwardArgs& a) {
  validate_token_logps_forward(a, DeviceKind::kCPU);
  dispatch<TokenFwd>(a.logits.dtype, a);
}

void token_logps_backward_cpu(const TokenLogpsBackwardArgs& a) {
  validate_token_logps_backward(a, DeviceKind::kCPU);
  dispatch<TokenBwd>(a.logits.dtype, a);
}

void oal_forward_cpu(const OalForwardArgs& a) {
  validate_oal_forward(a, DeviceKind::kCPU);
  dispatch<OalFwd>(a.logits.dtype, a);
}

void oal_backward_cpu(const OalBackwardArgs& a) {
  validate_oal_backward(a, DeviceKind::kCPU);
  dispatch<OalBwd>(a.logits.dtype, a);
}

}  // namespace drift
