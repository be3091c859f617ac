// Emulates, on the CPU, the two reductions of the CUDA OAL kernels (cpp/src/cuda/vocab.cu) with
// the drift/vocab.hpp helpers they call:
//  1. block_row_lse: 256 threads fold a row (groups of 16 bytes from the row's start, then a
//     scalar tail) with vocab::lse_fold, merge with vocab::lse_merge through a
//     shfl_down butterfly per warp and then over the 8 warps; checked against a float64
//     log-sum-exp and the NaN/-inf conventions of the CPU drivers;
//  2. oal_gather: 32 lanes stride over the positions with vocab::argmax_merge and reduce through
//     a shfl_down butterfly; must pick bit for bit the value and position of the sequential
//     vocab::argmax_takes scan the CPU driver runs (NaN first, larger, then the lowest position).
// Built and run by tests/test_vocab_native.py; exits non-zero on the first mismatch.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "drift/vocab.hpp"

using namespace drift;

constexpr int kWarp = 32;
constexpr int kThreads = 256;

// __shfl_down_sync: lane l reads lane l + offset, or keeps its own value past the warp's end.
template <typename S, typename Merge> void warp_reduce_down(S (&lanes)[kWarp], Merge merge) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    S before[kWarp];
    std::memcpy(before, lanes, sizeof before);
    for (int l = 0; l < kWarp; ++l) merge(lanes[l], l + offset < kWarp ? before[l + offset] : before[l]);
  }
}

// block_row_lse: thread k folds groups k, k + 256, ... of E = 16 / sizeof(A) elements counted
// from the row's start (the kernel loads a group with one 16-byte load or E element loads,
// by the row's alignment; the order is the same), then the tail one element at a time.
template <typename A> A emulated_block_lse(const std::vector<A>& row) {
  constexpr int E = 16 / sizeof(A);
  const int64_t V = static_cast<int64_t>(row.size());
  const int64_t groups = V / E;
  vocab::LseState<A> st[kThreads];
  for (int tid = 0; tid < kThreads; ++tid) {
    auto s = vocab::lse_empty<A>();
    for (int64_t k = tid; k < groups; k += kThreads) {
      A x[E];
      for (int e = 0; e < E; ++e) x[e] = row[k * E + e];
      s = vocab::lse_fold(s, x, E);
    }
    for (int64_t i = groups * E + tid; i < V; i += kThreads) {
      const A x[1] = {row[i]};
      s = vocab::lse_fold(s, x, 1);
    }
    st[tid] = s;
  }
  vocab::LseState<A> per_warp[kThreads / kWarp];
  for (int w = 0; w < kThreads / kWarp; ++w) {
    vocab::LseState<A> lanes[kWarp];
    for (int l = 0; l < kWarp; ++l) lanes[l] = st[w * kWarp + l];
    warp_reduce_down(lanes, [](vocab::LseState<A>& a, const vocab::LseState<A>& b) { a = vocab::lse_merge(a, b); });
    per_warp[w] = lanes[0];
  }
  vocab::LseState<A> total = per_warp[0];
  for (int w = 1; w < kThreads / kWarp; ++w) total = vocab::lse_merge(total, per_warp[w]);
  return vocab::lse_value(total);
}

struct Best {
  double value;
  int64_t pos;
};

template <typename A> bool same_bits(A a, A b) { return std::memcmp(&a, &b, sizeof a) == 0; }

int main() {
  std::mt19937_64 rng(11);
  int failures = 0, checks = 0;
  auto fail = [&](const char* what, long long a, long long b) {
    if (++failures < 6) std::printf("mismatch: %s (%lld, %lld)\n", what, a, b);
  };
  const float inf = std::numeric_limits<float>::infinity();

  // 1. Row log-sum-exp.
  const int64_t lengths[] = {1, 2, 3, 7, 8, 9, 31, 255, 256, 257, 1000, 4097, 32003};
  for (int64_t V : lengths) {
    for (int rep = 0; rep < 4; ++rep) {
      for (int kind = 0; kind < 6; ++kind) {
        std::vector<float> row(V);
        std::normal_distribution<float> normal(0.0f, 4.0f);
        for (auto& x : row) x = normal(rng);
        const int64_t at = static_cast<int64_t>(rng() % V);
        if (kind == 1) row[at] = std::nanf("");
        if (kind == 2) for (auto& x : row) x = -inf;
        if (kind == 3) { for (auto& x : row) x = -inf; row[at] = std::nanf(""); }
        if (kind == 4) row[at] = 60.0f;  // one dominant logit
        if (kind == 5) row[at] = -inf;
        const float got = emulated_block_lse(row);
        double ref_max = -INFINITY, ref_sum = 0.0;
        bool nan = false;
        for (float x : row) { nan = nan || std::isnan(x); if (x > ref_max) ref_max = x; }
        for (float x : row) if (!std::isnan(x)) ref_sum += std::exp(static_cast<double>(x) - ref_max);
        ++checks;
        if (nan) {
          if (!std::isnan(got)) fail("lse of a row with NaN is not NaN", V, kind);
        } else if (ref_max == -INFINITY) {
          if (!(got == -inf)) fail("lse of an all -inf row is not -inf", V, kind);
        } else {
          const double ref = ref_max + std::log(ref_sum);
          if (!(std::fabs(got - ref) <= 2e-5 * (1.0 + std::fabs(ref)))) fail("lse value", V, kind);
        }
        std::vector<double> drow(row.begin(), row.end());
        const double dgot = emulated_block_lse(drow);
        if (!nan && ref_max > -INFINITY) {
          const double ref = ref_max + std::log(ref_sum);
          ++checks;
          if (!(std::fabs(dgot - ref) <= 1e-12 * (1.0 + std::fabs(ref)))) fail("lse value (fp64)", V, kind);
        }
      }
    }
  }

  // 2. Arg-max over positions.
  const float pool[] = {-inf, -2.0f, -1.0f, -0.0f, 0.0f, 1.0f, 1.0f, 3.0f, std::nanf(""), inf};
  for (int trial = 0; trial < 20000; ++trial) {
    const int64_t T = static_cast<int64_t>(rng() % 150);
    const int choices = trial % 3 == 0 ? 8 : 10;  // a third of the trials without NaN/+inf
    std::vector<float> val(T);
    std::vector<bool> ok(T);
    for (int64_t t = 0; t < T; ++t) {
      val[t] = pool[rng() % choices];
      ok[t] = rng() % 4 != 0;
    }
    float want = 0.0f;
    int64_t want_pos = -1;
    for (int64_t t = 0; t < T; ++t)
      if (ok[t] && vocab::argmax_takes(val[t], t, want, want_pos)) {
        want = val[t];
        want_pos = t;
      }
    struct Lane { float best; int64_t pos; } lanes[kWarp];
    for (int l = 0; l < kWarp; ++l) {
      lanes[l] = {0.0f, -1};
      for (int64_t t = l; t < T; t += kWarp)
        if (ok[t]) vocab::argmax_merge(lanes[l].best, lanes[l].pos, val[t], t);
    }
    warp_reduce_down(lanes, [](Lane& a, const Lane& b) { vocab::argmax_merge(a.best, a.pos, b.best, b.pos); });
    ++checks;
    if (lanes[0].pos != want_pos) fail("arg-max position", lanes[0].pos, want_pos);
    else if (want_pos >= 0 && !same_bits(lanes[0].best, want)) fail("arg-max value bits", trial, want_pos);
  }
  std::printf("%d checks, %d mismatches\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
