// CUDA kernels of the fused vocabulary losses: token log-probs and OAL (drift/vocab.hpp).
//
// Row kernels (log-sum-exp, backward) run one block per row of V logits: each thread folds
// a strided slice into an online log-sum-exp state (Milakov & Gimelshein 2018), reading 16
// bytes at a time when the row is 16-byte aligned, and the states merge across the block.
// The OAL gather runs one warp per target slot: lanes stride over the positions and merge
// their running arg-maxes with the rule of drift/vocab.hpp (NaN first, then larger, then lower
// position), so CPU and CUDA pick the same position. All reductions have a fixed shape: the
// results are deterministic. Launchers allocate nothing and run on the caller's stream.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda/cuda_util.cuh"
#include "drift/vocab.hpp"
#include "drivers.hpp"
#include "dtype_dispatch.hpp"
#include "validate.hpp"

namespace drift {
namespace {

using vocab::acc_t;
using vocab::narrow;

constexpr int kWarp = 32;
constexpr int kRowThreads = 256;
constexpr int kSlotWarps = 2;
// 16-byte loads each thread of a row kernel issues before using any: enough bytes in flight to
// cover HBM latency at full bandwidth (Little's law) without raising register pressure much.
constexpr int kLoadsInFlight = 4;
constexpr int64_t kMaxGrid = int64_t(1) << 30;

void check(cudaError_t err, const char* what) { cuda::check(err, "oal", what); }

unsigned grid_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>(std::min<int64_t>((items + per_block - 1) / per_block, kMaxGrid));
}

// ---- row access --------------------------------------------------------------------------

// Elements per 16-byte vector and the number of leading elements before the first 16-byte
// boundary of `p` (sizeof(T) divides 16, and torch aligns elements to their size).
template <typename T> struct Vec {
  static constexpr int kElems = 16 / sizeof(T);
  union Pack {
    uint4 raw;
    T v[kElems];
  };
};

template <typename T> __device__ __forceinline__ int64_t head_elems(const T* p, int64_t n) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const int64_t head = static_cast<int64_t>((16 - addr % 16) % 16) / static_cast<int64_t>(sizeof(T));
  return head < n ? head : n;
}

template <typename A> __device__ __forceinline__ vocab::LseState<A> shfl_down(vocab::LseState<A> st, int offset) {
  return {__shfl_down_sync(0xffffffffu, st.m, offset), __shfl_down_sync(0xffffffffu, st.s, offset)};
}

// log-sum-exp of one row, computed by the whole block; the result is returned to every thread.
// The fold order depends on the row's contents and V only, never on its address: thread k
// folds groups k, k + blockDim, ... of E elements counted from the row's start (one 16-byte
// load each when the row is 16-byte aligned, E element loads otherwise), then the tail one
// element at a time. So bitwise-equal rows get bitwise-equal results wherever they lie, and
// their exact ties in the OAL arg-max go to the lowest position as on the CPU.
template <typename T> __device__ acc_t<T> block_row_lse(const T* row, int64_t V) {
  using A = acc_t<T>;
  __shared__ A sm[kRowThreads / kWarp];
  __shared__ A ss[kRowThreads / kWarp];
  __shared__ A result;
  constexpr int E = Vec<T>::kElems;
  auto st = vocab::lse_empty<A>();
  const int64_t groups = V / E;
  const bool aligned = reinterpret_cast<uintptr_t>(row) % 16 == 0;  // the same for the whole block
  const auto* vp = reinterpret_cast<const uint4*>(row);
  const int64_t stride = blockDim.x;
  if (aligned) {
    // kLoadsInFlight 16-byte loads issued before any is folded (memory-level parallelism); the
    // fold order (groups k, k + stride, ...) is the same as one at a time.
    for (int64_t k = threadIdx.x; k < groups; k += kLoadsInFlight * stride) {
      typename Vec<T>::Pack pack[kLoadsInFlight];
#pragma unroll
      for (int u = 0; u < kLoadsInFlight; ++u)
        if (k + u * stride < groups) pack[u].raw = vp[k + u * stride];
#pragma unroll
      for (int u = 0; u < kLoadsInFlight; ++u) {
        if (k + u * stride >= groups) break;
        A x[E];
#pragma unroll
        for (int e = 0; e < E; ++e) x[e] = vocab::to_float(pack[u].v[e]);
        st = vocab::lse_fold(st, x, E);
      }
    }
  } else {
    for (int64_t k = threadIdx.x; k < groups; k += stride) {
      A x[E];
#pragma unroll
      for (int e = 0; e < E; ++e) x[e] = vocab::to_float(row[k * E + e]);
      st = vocab::lse_fold(st, x, E);
    }
  }
  for (int64_t i = groups * E + threadIdx.x; i < V; i += blockDim.x) {
    const A x[1] = {vocab::to_float(row[i])};
    st = vocab::lse_fold(st, x, 1);
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) st = vocab::lse_merge(st, shfl_down(st, offset));
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) {
    sm[warp] = st.m;
    ss[warp] = st.s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    vocab::LseState<A> total = {sm[0], ss[0]};
    for (int w = 1; w < static_cast<int>(blockDim.x) / kWarp; ++w) total = vocab::lse_merge(total, {sm[w], ss[w]});
    result = vocab::lse_value(total);
  }
  __syncthreads();
  const A value = result;
  __syncthreads();  // `result` is reused by the next row of a grid-stride loop
  return value;
}

// out[v] = f(v, row[v]) for every v of the row, by the whole block. When the two rows share
// their offset from a 16-byte boundary (always, for contiguous logits with V * sizeof(T) a
// multiple of 16), the body moves 16 bytes per load and store.
template <typename T, typename Fn> __device__ void block_map_row(const T* row, T* out, int64_t V, Fn f) {
  constexpr int E = Vec<T>::kElems;
  const auto in_addr = reinterpret_cast<uintptr_t>(row), out_addr = reinterpret_cast<uintptr_t>(out);
  int64_t head = V, nvec = 0;
  if (in_addr % 16 == out_addr % 16) {
    head = head_elems(row, V);
    nvec = (V - head) / E;
  }
  for (int64_t v = threadIdx.x; v < head; v += blockDim.x) out[v] = narrow<T>(f(v, vocab::to_float(row[v])));
  const auto* src = reinterpret_cast<const uint4*>(row + head);
  auto* dst = reinterpret_cast<uint4*>(out + head);
  const int64_t stride = blockDim.x;
  int64_t k = threadIdx.x;
  for (; k + (kLoadsInFlight - 1) * stride < nvec; k += kLoadsInFlight * stride) {
    typename Vec<T>::Pack in[kLoadsInFlight];
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) in[u].raw = src[k + u * stride];
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) {
      typename Vec<T>::Pack res;
      const int64_t first = head + (k + u * stride) * E;
#pragma unroll
      for (int e = 0; e < E; ++e) res.v[e] = narrow<T>(f(first + e, vocab::to_float(in[u].v[e])));
      dst[k + u * stride] = res.raw;
    }
  }
  for (; k < nvec; k += stride) {
    typename Vec<T>::Pack in, res;
    in.raw = src[k];
#pragma unroll
    for (int e = 0; e < E; ++e) res.v[e] = narrow<T>(f(head + k * E + e, vocab::to_float(in.v[e])));
    dst[k] = res.raw;
  }
  for (int64_t v = head + nvec * E + threadIdx.x; v < V; v += blockDim.x)
    out[v] = narrow<T>(f(v, vocab::to_float(row[v])));
}

// out[v] = scale * exp(row[v] - lse) (+ one-hot corrections written afterwards by the caller).
template <typename T>
__device__ void block_scaled_softmax(const T* row, int64_t V, acc_t<T> lse, acc_t<T> scale, T* out) {
  using A = acc_t<T>;
  block_map_row(row, out, V, [=](int64_t, A x) { return scale * vocab::exp_fast(x - lse); });
}

template <typename T> __device__ void block_zero(T* out, int64_t V) {
  const int64_t head = head_elems(out, V);
  constexpr int E = Vec<T>::kElems;
  for (int64_t i = threadIdx.x; i < head; i += blockDim.x) out[i] = T{};
  const int64_t nvec = (V - head) / E;
  auto* vp = reinterpret_cast<uint4*>(out + head);
  for (int64_t k = threadIdx.x; k < nvec; k += blockDim.x) vp[k] = make_uint4(0u, 0u, 0u, 0u);
  for (int64_t i = head + nvec * E + threadIdx.x; i < V; i += blockDim.x) out[i] = T{};
}

struct RowStrides {
  int64_t b, t;
};

template <typename T> __device__ __forceinline__ const T* row_at(const T* logits, RowStrides s, int64_t b, int64_t t) {
  return logits + b * s.b + t * s.t;
}

// ---- token log-probs ----------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kRowThreads) token_logps_forward_kernel(const T* __restrict__ logits, RowStrides strides, int64_t T_, int64_t V,
                                           int64_t rows, const int64_t* __restrict__ labels,
                                           const bool* __restrict__ mask, acc_t<T>* __restrict__ logps,
                                           acc_t<T>* __restrict__ lse) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    if (!mask[i]) {
      if (threadIdx.x == 0) logps[i] = lse[i] = A(0);
      continue;
    }
    const T* row = row_at(logits, strides, i / T_, i % T_);
    const A l = block_row_lse(row, V);
    if (threadIdx.x == 0) {
      const int64_t v = labels[i];
      lse[i] = l;
      logps[i] = (v >= 0 && v < V) ? vocab::to_float(row[v]) - l : static_cast<A>(NAN);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads) token_logps_backward_kernel(const T* __restrict__ logits, RowStrides strides, int64_t T_, int64_t V,
                                            int64_t rows, const int64_t* __restrict__ labels,
                                            const bool* __restrict__ mask, const acc_t<T>* __restrict__ grad_logps,
                                            const acc_t<T>* __restrict__ lse, T* __restrict__ grad) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    T* out = grad + i * V;
    if (!mask[i]) {
      block_zero(out, V);
      continue;
    }
    const T* row = row_at(logits, strides, i / T_, i % T_);
    const A g = grad_logps[i], l = lse[i];
    const int64_t label = labels[i];
    block_map_row(row, out, V, [=](int64_t v, A x) {
      const A p = vocab::exp_fast(x - l);
      return v == label ? g - g * p : -g * p;
    });
  }
}

// ---- OAL ----------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kRowThreads) row_lse_kernel(const T* __restrict__ logits, RowStrides strides, int64_t T_, int64_t V, int64_t rows,
                               const bool* __restrict__ mask, acc_t<T>* __restrict__ lse) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    if (!mask[i]) {
      if (threadIdx.x == 0) lse[i] = A(0);
      continue;
    }
    const A l = block_row_lse(row_at(logits, strides, i / T_, i % T_), V);
    if (threadIdx.x == 0) lse[i] = l;
  }
}

// One warp per target slot (b, m): skip padding, out-of-range ids and later duplicates of an
// id, then the arg-max over valid positions of logits[b, t, v] - lse[b, t].
template <typename T>
__global__ void oal_gather_kernel(const T* __restrict__ logits, RowStrides strides, int64_t T_, int64_t V, int64_t M,
                                  int64_t slots, const int64_t* __restrict__ targets,
                                  const bool* __restrict__ logits_mask, const bool* __restrict__ targets_mask,
                                  const acc_t<T>* __restrict__ lse, acc_t<T>* __restrict__ target_logps,
                                  int64_t* __restrict__ argmax) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t slot = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; slot < slots; slot += warps) {
    const int64_t b = slot / M, m = slot % M;
    const int64_t v = targets[slot];
    bool counted = targets_mask[slot] && v >= 0 && v < V;
    if (counted) {
      bool dup = false;
      for (int64_t k = lane; k < m; k += kWarp) dup = dup || (targets_mask[b * M + k] && targets[b * M + k] == v);
      counted = !__any_sync(0xffffffffu, dup);
    }
    A best = A(0);
    int64_t pos = -1;
    if (counted) {
      // Loads are unconditional (t < T_, v < V: in bounds) so that several are in flight.
#pragma unroll 4
      for (int64_t t = lane; t < T_; t += kWarp) {
        const bool valid = logits_mask[b * T_ + t];
        const A val = vocab::to_float(row_at(logits, strides, b, t)[v]) - lse[b * T_ + t];
        if (valid) vocab::argmax_merge(best, pos, val, t);
      }
#pragma unroll
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        const A other = __shfl_down_sync(0xffffffffu, best, offset);
        const long long other_pos = __shfl_down_sync(0xffffffffu, static_cast<long long>(pos), offset);
        vocab::argmax_merge(best, pos, other, static_cast<int64_t>(other_pos));
      }
    }
    if (lane == 0) {
      target_logps[slot] = pos >= 0 ? best : A(0);
      argmax[slot] = pos;
    }
  }
}

template <typename A> __device__ A block_sum(A x, A* scratch) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    A total = scratch[0];
    for (int w = 1; w < static_cast<int>(blockDim.x) / kWarp; ++w) total += scratch[w];
    scratch[kRowThreads / kWarp] = total;
  }
  __syncthreads();
  const A total = scratch[kRowThreads / kWarp];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads) oal_backward_kernel(const T* __restrict__ logits, RowStrides strides, int64_t T_, int64_t V, int64_t M,
                                    int64_t rows, const int64_t* __restrict__ targets,
                                    const int64_t* __restrict__ argmax, const acc_t<T>* __restrict__ grad_target_logps,
                                    const acc_t<T>* __restrict__ lse, T* __restrict__ grad) {
  using A = acc_t<T>;
  __shared__ A scratch[kRowThreads / kWarp + 1];
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / T_, t = i % T_;
    T* out = grad + i * V;
    A gsum = A(0);
    int hit = 0;
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x)
      if (argmax[b * M + m] == t) {
        hit = 1;
        gsum += grad_target_logps[b * M + m];
      }
    const int any_hit = __syncthreads_or(hit);
    if (!any_hit) {
      block_zero(out, V);
      continue;
    }
    gsum = block_sum(gsum, scratch);
    const T* row = row_at(logits, strides, b, t);
    const A l = lse[i];
    block_scaled_softmax(row, V, l, -gsum, out);
    __syncthreads();  // the one-hot corrections overwrite elements other threads wrote
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
      const int64_t v = targets[b * M + m];
      if (argmax[b * M + m] == t && v >= 0 && v < V)
        out[v] = narrow<T>(grad_target_logps[b * M + m] - gsum * vocab::exp_fast(vocab::to_float(row[v]) - l));
    }
    __syncthreads();
  }
}

// ---- launchers ----------------------------------------------------------------------------

RowStrides strides_of(const TensorView& logits) { return {logits.strides[0], logits.strides[1]}; }

// Launches a row kernel (one block of kRowThreads per row, grid-stride beyond kMaxGrid rows).
template <typename... Params, typename... Args>
void launch_rows(void (*kernel)(Params...), int64_t rows, cudaStream_t stream, const char* what, Args... args) {
  if (rows == 0) return;
  kernel<<<grid_for(rows, 1), kRowThreads, 0, stream>>>(args...);
  check(cudaGetLastError(), what);
}

template <typename T> void launch(TypeTag<T>, const TokenLogpsForwardArgs& a, cudaStream_t stream) {
  using A = acc_t<T>;
  const int64_t B = a.logits.shape[0], T_ = a.logits.shape[1], V = a.logits.shape[2], rows = B * T_;
  launch_rows(token_logps_forward_kernel<T>, rows, stream, "token_logps forward launch", a.logits.ptr<T>(),
              strides_of(a.logits), T_, V, rows, a.labels.ptr<int64_t>(), a.mask.ptr<bool>(), a.logps.ptr<A>(),
              a.lse.ptr<A>());
}

template <typename T> void launch(TypeTag<T>, const TokenLogpsBackwardArgs& a, cudaStream_t stream) {
  using A = acc_t<T>;
  const int64_t B = a.logits.shape[0], T_ = a.logits.shape[1], V = a.logits.shape[2], rows = B * T_;
  launch_rows(token_logps_backward_kernel<T>, rows, stream, "token_logps backward launch", a.logits.ptr<T>(),
              strides_of(a.logits), T_, V, rows, a.labels.ptr<int64_t>(), a.mask.ptr<bool>(),
              a.grad_logps.ptr<A>(), a.lse.ptr<A>(), a.grad_logits.ptr<T>());
}

template <typename T> void launch(TypeTag<T>, const OalForwardArgs& a, cudaStream_t stream) {
  using A = acc_t<T>;
  const int64_t B = a.logits.shape[0], T_ = a.logits.shape[1], V = a.logits.shape[2], M = a.targets.shape[1];
  const int64_t rows = B * T_, slots = B * M;
  launch_rows(row_lse_kernel<T>, rows, stream, "oal row log-sum-exp launch", a.logits.ptr<T>(), strides_of(a.logits),
              T_, V, rows, a.logits_mask.ptr<bool>(), a.lse.ptr<A>());
  if (slots > 0) {
    oal_gather_kernel<T><<<grid_for(slots, kSlotWarps), kSlotWarps * kWarp, 0, stream>>>(
        a.logits.ptr<T>(), strides_of(a.logits), T_, V, M, slots, a.targets.ptr<int64_t>(),
        a.logits_mask.ptr<bool>(), a.targets_mask.ptr<bool>(), a.lse.ptr<A>(), a.target_logps.ptr<A>(),
        a.argmax.ptr<int64_t>());
    check(cudaGetLastError(), "oal gather launch");
  }
}

template <typename T> void launch(TypeTag<T>, const OalBackwardArgs& a, cudaStream_t stream) {
  using A = acc_t<T>;
  const int64_t B = a.logits.shape[0], T_ = a.logits.shape[1], V = a.logits.shape[2], M = a.targets.shape[1];
  const int64_t rows = B * T_;
  launch_rows(oal_backward_kernel<T>, rows, stream, "oal backward launch", a.logits.ptr<T>(), strides_of(a.logits), T_,
              V, M, rows, a.targets.ptr<int64_t>(), a.argmax.ptr<int64_t>(), a.grad_target_logps.ptr<A>(),
              a.lse.ptr<A>(), a.grad_logits.ptr<T>());
}

cudaStream_t as_stream(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// ---- id range check -------------------------------------------------------------------------

// Smallest flat index i with mask[i] and ids[i] outside [0, V) (atomicMin over 32-bit indices;
// *first starts at all ones).
__global__ void first_bad_id_kernel(const int64_t* __restrict__ ids, const bool* __restrict__ mask, int64_t n,
                                    int64_t V, unsigned int* first) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    if (mask[i] && (ids[i] < 0 || ids[i] >= V))
      atomicMin(first, static_cast<unsigned int>(i < int64_t(UINT32_MAX) ? i : int64_t(UINT32_MAX) - 1));
}

// The CPU drivers reject valid ids outside [0, V) while they read them; on the GPU this runs
// before the kernels read logits at those ids: one small kernel and one host synchronisation,
// the same message as on the CPU. `scratch`: 4 bytes of an output the forward writes later.
void check_ids(const TensorView& ids, const TensorView& mask, int64_t V, void* scratch, cudaStream_t stream,
               const char* name) {
  const int64_t n = ids.numel();
  if (n == 0) return;
  auto* first = static_cast<unsigned int*>(scratch);
  check(cudaMemsetAsync(first, 0xff, sizeof(unsigned int), stream), "id check: reset");
  first_bad_id_kernel<<<std::min(grid_for(n, kRowThreads), 1024u), kRowThreads, 0, stream>>>(
      ids.ptr<int64_t>(), mask.ptr<bool>(), n, V, first);
  check(cudaGetLastError(), "id check launch");
  unsigned int index = 0;
  check(cudaMemcpyAsync(&index, first, sizeof(index), cudaMemcpyDeviceToHost, stream), "id check: read");
  check(cudaStreamSynchronize(stream), "id check: synchronize");
  if (index == UINT32_MAX) return;
  int64_t id = 0;
  check(cudaMemcpyAsync(&id, ids.ptr<int64_t>() + index, sizeof(id), cudaMemcpyDeviceToHost, stream), "id check: id");
  check(cudaStreamSynchronize(stream), "id check: synchronize");
  fail(std::string(name) + ": id " + std::to_string(id) + " outside [0, " + std::to_string(V) + ")");
}

// The forwards check their ids (`scratch`: an output written later); the backwards take ids
// the forward has checked.
void check_ids_of(const TokenLogpsForwardArgs& a, cudaStream_t stream) {
  check_ids(a.labels, a.mask, a.logits.shape[2], a.logps.data, stream, "labels");
}
void check_ids_of(const OalForwardArgs& a, cudaStream_t stream) {
  check_ids(a.targets, a.targets_mask, a.logits.shape[2], a.argmax.data, stream, "targets");
}
template <typename Args> void check_ids_of(const Args&, cudaStream_t) {}

}  // namespace

template <typename Args> void run_cuda(const Args& a, std::uintptr_t handle) {
  validate(a, DeviceKind::kCUDA);
  cuda::DeviceGuard guard(a.logits.device_id, "oal");
  const cudaStream_t stream = as_stream(handle);
  check_ids_of(a, stream);
  dispatch_logits_dtype(a.logits.dtype, [&](auto tag) { launch(tag, a, stream); });
}

template void run_cuda(const TokenLogpsForwardArgs&, std::uintptr_t);
template void run_cuda(const TokenLogpsBackwardArgs&, std::uintptr_t);
template void run_cuda(const OalForwardArgs&, std::uintptr_t);
template void run_cuda(const OalBackwardArgs&, std::uintptr_t);

}  // namespace drift
