// CUDA batch driver for drift::lcs: one warp per pair, several pairs per block. The body of
// the kernel is lcs::warp_lcs (drift/lcs_warp.hpp), shared with the CPU emulation test: per
// column, the match word of y against y'_j is built by 32-lane ballots over y staged in shared
// memory (all lanes busy at every length), lane l owns words l, l + 32, ... of V, the carries
// cross lanes through two ballots and lcs::resolve_carries, and each column's F = V & ~PM goes
// to a torch-allocated history buffer that lcs::traceback (lane 0) walks back run by run.
// When one pair's staged copy of y exceeds the device's shared memory the lanes read y from
// global memory instead. The kernel checks each pair's lengths and ids as it reads them and
// writes -1 as the LCS length of an invalid pair; the host then raises.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda/cuda_util.cuh"
#include "drift/lcs_warp.hpp"
#include "drivers.hpp"
#include "validate.hpp"

namespace drift {
namespace {

constexpr int kWarp = lcs::kLanes;
constexpr int64_t kMaxLength = lcs::kWarpMaxLength;
constexpr int kMaxWarpsPerBlock = 8;
constexpr size_t kDefaultSmem = 48u << 10;
constexpr int64_t kMaxPairsPerLaunch = int64_t(1) << 30;

void check(cudaError_t err, const char* what) { cuda::check(err, "lcs", what); }

// The warp interface of lcs::warp_lcs on the GPU: each lane holds its own registers.
struct DeviceWarp {
  template <typename T> struct Reg {
    T x;
    __device__ __forceinline__ T& operator[](int) { return x; }
  };
  int lane;
  template <typename F> __device__ __forceinline__ void each(F f) { f(lane); }
  template <typename F> __device__ __forceinline__ uint32_t ballot(F f) { return __ballot_sync(0xffffffffu, f(lane)); }
  template <typename T> __device__ __forceinline__ T shfl(Reg<T>& r, int src) {
    if constexpr (sizeof(T) == 8) return static_cast<T>(__shfl_sync(0xffffffffu, static_cast<long long>(r.x), src));
    else return static_cast<T>(__shfl_sync(0xffffffffu, static_cast<int>(r.x), src));
  }
  template <typename T> __device__ __forceinline__ Reg<T> shfl_down(Reg<T>& r, int delta) {
    return Reg<T>{__shfl_down_sync(0xffffffffu, r.x, delta)};
  }
  __device__ __forceinline__ void sync() { __syncwarp(); }
};

// At most 64 registers: 4 blocks of 8 warps per SM. kRounds: V words per lane (1 up to
// length 2048, no spills at this cap; 8 for the longest sequences).
template <typename TA, typename TB, bool kStaged, int kRounds>
__global__ void __launch_bounds__(kMaxWarpsPerBlock * kWarp, 4)
    lcs_kernel(const TA* __restrict__ y, const TB* __restrict__ yp, const int64_t* __restrict__ y_len,
               const int64_t* __restrict__ yp_len, bool* __restrict__ mask_y, bool* __restrict__ mask_yp,
               int64_t* __restrict__ out_len, uint64_t* __restrict__ history, int64_t B, int64_t M, int64_t N,
               int64_t first_pair, int64_t pairs_in_launch, int warps_per_block) {
  extern __shared__ int64_t smem[];
  const int warp = threadIdx.x / kWarp;
  const int64_t slot = int64_t(blockIdx.x) * warps_per_block + warp;
  const int64_t words_max = lcs::num_words(M);
  // Whole warps leave here (slot is warp-uniform): the full-mask ballots stay valid.
  if (slot >= pairs_in_launch) return;
  const int64_t b = first_pair + slot;
  if (b >= B) return;
  // Lengths and ids come from device memory the host did not check: warp_lcs clamps what it
  // reads and returns -1 for an invalid pair, which the host turns into an error.
  DeviceWarp w{static_cast<int>(threadIdx.x % kWarp)};
  int64_t* staged = kStaged ? smem + int64_t(warp) * words_max * lcs::kSharedWordsPerWord : nullptr;
  uint64_t* pm_block = kStaged ? reinterpret_cast<uint64_t*>(staged + words_max * lcs::kWordBits) : nullptr;
  const int64_t length = lcs::warp_lcs<kStaged, kRounds>(w, y + b * M, y_len[b], M, yp + b * N, yp_len[b], N, staged, pm_block,
                                                mask_y + b * M, mask_yp + b * N, history + slot * N * words_max);
  if (w.lane == 0) out_len[b] = length;
}

template <typename TA, typename TB, bool kStaged, int kRounds>
void launch_chunks(const LcsArgs& args, const TensorView& scratch, cudaStream_t stream, int64_t capacity,
                   int warps_per_block, size_t smem) {
  const int64_t B = args.y.shape[0], M = args.y.shape[1], N = args.y_prime.shape[1];
  if (smem > kDefaultSmem)
    check(cudaFuncSetAttribute(lcs_kernel<TA, TB, kStaged, kRounds>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "shared memory opt-in");
  for (int64_t first = 0; first < B; first += capacity) {
    const int64_t pairs = std::min(capacity, B - first);
    const int64_t blocks = (pairs + warps_per_block - 1) / warps_per_block;
    lcs_kernel<TA, TB, kStaged, kRounds><<<static_cast<unsigned>(blocks), warps_per_block * kWarp, smem, stream>>>(
        args.y.ptr<TA>(), args.y_prime.ptr<TB>(), args.y_len.ptr<int64_t>(), args.y_prime_len.ptr<int64_t>(),
        args.mask_y.ptr<bool>(), args.mask_y_prime.ptr<bool>(), args.lcs_len.ptr<int64_t>(),
        reinterpret_cast<uint64_t*>(scratch.data), B, M, N, first, pairs, warps_per_block);
    check(cudaGetLastError(), "kernel launch");
  }
}

// One V word per lane up to 2048 positions (the common case: fewer live registers), else the most.
template <typename TA, typename TB, bool kStaged>
void launch_rounds(const LcsArgs& args, const TensorView& scratch, cudaStream_t stream, int64_t capacity,
                   int64_t words_max, int warps_per_block, size_t smem) {
  if (words_max <= lcs::kLanes)
    launch_chunks<TA, TB, kStaged, 1>(args, scratch, stream, capacity, warps_per_block, smem);
  else
    launch_chunks<TA, TB, kStaged, lcs::kMaxWordsPerLane>(args, scratch, stream, capacity, warps_per_block, smem);
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
  const size_t smem_per_warp = static_cast<size_t>(words_max) * lcs::kSharedWordsPerWord * sizeof(int64_t);
  // DRIFT_LCS_CUDA_STAGING=off forces the global-memory path (so that tests can exercise it on
  // GPUs whose shared memory holds every length).
  const char* staging = std::getenv("DRIFT_LCS_CUDA_STAGING");
  const bool staging_off = staging != nullptr && std::strcmp(staging, "off") == 0;
  if (staging_off || smem_per_warp > static_cast<size_t>(smem_optin)) {
    launch_rounds<TA, TB, false>(args, scratch, stream, capacity, words_max, kMaxWarpsPerBlock, 0);
    return;
  }
  const int warps_per_block =
      static_cast<int>(std::max<size_t>(1, std::min<size_t>(kMaxWarpsPerBlock, kDefaultSmem / smem_per_warp)));
  launch_rounds<TA, TB, true>(args, scratch, stream, capacity, words_max, warps_per_block,
                              smem_per_warp * warps_per_block);
}

}  // namespace

int64_t lcs_cuda_max_length() { return kMaxLength; }

void lcs_cuda(const LcsArgs& args, const TensorView& scratch, std::uintptr_t stream_handle) {
  validate(args, DeviceKind::kCUDA);
  expect(scratch, "scratch", {DType::kInt64}, {-1, -1}, DeviceKind::kCUDA, args.y.device_id);
  if (args.y.shape[1] > kMaxLength)
    fail("y: length " + std::to_string(args.y.shape[1]) + " exceeds the CUDA maximum " + std::to_string(kMaxLength));
  if (args.y_prime.shape[1] > lcs::kWarpMaxOtherLength)
    fail("y_prime: length " + std::to_string(args.y_prime.shape[1]) + " exceeds the CUDA maximum " +
         std::to_string(lcs::kWarpMaxOtherLength));
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
