// CUDA batch driver for drift::lcs: one warp per pair. Lane k owns words k, k+32, ... of
// the bit vector V; the multi-word addition's carries cross lanes through two ballots and
// lcs::resolve_carries (the same arithmetic the CPU tests exercise). y is staged in shared
// memory transposed (lcs::staged_index) so that the lanes building their match words read
// consecutive addresses; when one pair's copy exceeds the device's shared memory (long y on
// GPUs with ~100 KiB per block) the lanes read y from global memory instead. The traceback
// (lcs::traceback, shared with the CPU) runs on lane 0 over the column history kept in a
// torch-allocated scratch buffer.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda/cuda_util.cuh"
#include "drift/lcs.hpp"
#include "drivers.hpp"

namespace drift {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxChunks = 8;  // words per lane: max length 8 * 32 * 64 = 16384
constexpr int64_t kMaxLength = int64_t(kMaxChunks) * kWarp * lcs::kWordBits;
constexpr int kMaxWarpsPerBlock = 4;
constexpr int64_t kMaxPairsPerLaunch = int64_t(1) << 30;

void check(cudaError_t err, const char* what) { cuda::check(err, "lcs", what); }

template <typename TA, typename TB, bool kStaged>
__global__ void lcs_kernel(const TA* __restrict__ y, const TB* __restrict__ yp, const int64_t* __restrict__ y_len,
                           const int64_t* __restrict__ yp_len, bool* __restrict__ mask_y, bool* __restrict__ mask_yp,
                           int64_t* __restrict__ out_len, uint64_t* __restrict__ history, int64_t B, int64_t M,
                           int64_t N, int64_t first_pair, int64_t pairs_in_launch, int warps_per_block) {
  extern __shared__ int64_t smem[];
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int64_t slot = int64_t(blockIdx.x) * warps_per_block + warp;
  const int64_t words_max = lcs::num_words(M);
  int64_t* sa = kStaged ? smem + int64_t(warp) * words_max * lcs::kWordBits : nullptr;
  // Whole warps leave here (slot is warp-uniform): the full-mask ballots below stay valid.
  if (slot >= pairs_in_launch) return;
  const int64_t b = first_pair + slot;
  if (b >= B) return;

  // Lengths come from device memory we did not check on the host: clamp, never trust.
  const int64_t m = min(max(y_len[b], int64_t(0)), M);
  const int64_t n = min(max(yp_len[b], int64_t(0)), N);
  const int64_t words = lcs::num_words(m);
  const TA* a = y + b * M;
  const TB* c = yp + b * N;
  bool* ma = mask_y + b * M;
  bool* mb = mask_yp + b * N;
  uint64_t* hist = history + slot * N * words_max;

  for (int64_t i = lane; i < M; i += kWarp) ma[i] = i < m;
  for (int64_t j = lane; j < N; j += kWarp) mb[j] = j < n;
  if (kStaged) {
    for (int64_t p = lane; p < words * lcs::kWordBits; p += kWarp)
      sa[lcs::staged_index(p, words)] = p < m ? static_cast<int64_t>(a[p]) : lcs::kNoToken;
  }
  __syncwarp();

  if (m > 0 && n > 0) {
    const int chunks = static_cast<int>((words + kWarp - 1) / kWarp);
    uint64_t v[kMaxChunks];
#pragma unroll
    for (int k = 0; k < kMaxChunks; ++k) v[k] = ~uint64_t(0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t token = static_cast<int64_t>(c[j]);
      uint32_t carry = 0;
#pragma unroll
      for (int k = 0; k < kMaxChunks; ++k) {
        if (k >= chunks) break;  // warp-uniform
        const int64_t w = int64_t(k) * kWarp + lane;
        uint64_t pm = 0;
        if (w < words)
          pm = kStaged ? lcs::match_word_staged(sa, words, w, token) : lcs::match_word_direct(a, m, w, token);
        const uint64_t x = v[k] & pm;
        uint64_t own_carry = 0;
        const uint64_t s = lcs::add_carry(v[k], x, 0, &own_carry);
        const uint32_t gen = __ballot_sync(0xffffffffu, w < words && own_carry);
        const uint32_t prop = __ballot_sync(0xffffffffu, w < words && s == ~uint64_t(0));
        uint32_t chunk_out = 0;
        const uint32_t carries = lcs::resolve_carries(gen, prop, carry, &chunk_out);
        carry = chunk_out;
        if (w < words) {
          v[k] = lcs::combine(s + ((carries >> lane) & 1u), v[k], pm);
          hist[j * words + w] = v[k];
        }
      }
    }
    __syncwarp();  // orders the other lanes' history (and mask) writes before lane 0 reads them
    if (lane == 0) {
      __threadfence_block();  // redundant with __syncwarp's ordering guarantee; kept as a belt
      out_len[b] = lcs::traceback(hist, words, a, m, c, n, ma, mb);
    }
  } else if (lane == 0) {
    out_len[b] = 0;
  }
}

template <typename TA, typename TB, bool kStaged>
void launch_chunks(const LcsArgs& args, const TensorView& scratch, cudaStream_t stream, int64_t capacity,
                   int warps_per_block, size_t smem) {
  const int64_t B = args.y.shape[0], M = args.y.shape[1], N = args.y_prime.shape[1];
  if (smem > (48u << 10))
    check(cudaFuncSetAttribute(lcs_kernel<TA, TB, kStaged>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "shared memory opt-in");
  for (int64_t first = 0; first < B; first += capacity) {
    const int64_t pairs = std::min(capacity, B - first);
    const int64_t blocks = (pairs + warps_per_block - 1) / warps_per_block;
    lcs_kernel<TA, TB, kStaged><<<static_cast<unsigned>(blocks), warps_per_block * kWarp, smem, stream>>>(
        args.y.ptr<TA>(), args.y_prime.ptr<TB>(), args.y_len.ptr<int64_t>(), args.y_prime_len.ptr<int64_t>(),
        args.mask_y.ptr<bool>(), args.mask_y_prime.ptr<bool>(), args.lcs_len.ptr<int64_t>(),
        reinterpret_cast<uint64_t*>(scratch.data), B, M, N, first, pairs, warps_per_block);
    check(cudaGetLastError(), "kernel launch");
  }
}

template <typename TA, typename TB>
void launch(const LcsArgs& args, const TensorView& scratch, cudaStream_t stream) {
  const int64_t B = args.y.shape[0], M = args.y.shape[1], N = args.y_prime.shape[1];
  if (B == 0) return;
  const int64_t words_max = std::max<int64_t>(1, lcs::num_words(M));
  const int64_t per_pair = std::max<int64_t>(1, N) * words_max;
  // Pairs per launch: as many as the scratch holds, and few enough for a 1-D grid.
  const int64_t capacity = std::min(scratch.numel() / per_pair, kMaxPairsPerLaunch);
  if (capacity < 1) fail("scratch: too small for one pair of traceback history");
  int device = 0, smem_optin = 0;
  check(cudaGetDevice(&device), "get device");
  check(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "shared memory limit");
  const size_t smem_per_warp = static_cast<size_t>(words_max) * lcs::kWordBits * sizeof(int64_t);
  // DRIFT_LCS_CUDA_STAGING=off forces the global-memory path (so that tests can exercise it on
  // GPUs whose shared memory holds every length).
  const char* staging = std::getenv("DRIFT_LCS_CUDA_STAGING");
  const bool staging_off = staging != nullptr && std::strcmp(staging, "off") == 0;
  if (staging_off || smem_per_warp > static_cast<size_t>(smem_optin)) {
    launch_chunks<TA, TB, false>(args, scratch, stream, capacity, kMaxWarpsPerBlock, 0);
    return;
  }
  const int warps_per_block =
      static_cast<int>(std::max<size_t>(1, std::min<size_t>(kMaxWarpsPerBlock, (48u << 10) / smem_per_warp)));
  launch_chunks<TA, TB, true>(args, scratch, stream, capacity, warps_per_block, smem_per_warp * warps_per_block);
}

}  // namespace

int64_t lcs_cuda_max_length() { return kMaxLength; }

void lcs_cuda(const LcsArgs& args, const TensorView& scratch, std::uintptr_t stream_handle) {
  validate_lcs_args(args, DeviceKind::kCUDA);
  expect(scratch, "scratch", {DType::kInt64}, {-1, -1}, DeviceKind::kCUDA, args.y.device_id);
  if (args.y.shape[1] > kMaxLength)
    fail("y: length " + std::to_string(args.y.shape[1]) + " exceeds the CUDA maximum " + std::to_string(kMaxLength));
  cuda::DeviceGuard guard(args.y.device_id, "lcs");
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const bool a64 = args.y.dtype == DType::kInt64, b64 = args.y_prime.dtype == DType::kInt64;
  if (a64 && b64) launch<int64_t, int64_t>(args, scratch, stream);
  else if (a64) launch<int64_t, int32_t>(args, scratch, stream);
  else if (b64) launch<int32_t, int64_t>(args, scratch, stream);
  else launch<int32_t, int32_t>(args, scratch, stream);
}

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

}  // namespace drift
