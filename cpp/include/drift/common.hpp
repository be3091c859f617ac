// Portability macros shared by every algorithm header: the same inline code compiles into the
// CPU drivers (g++) and the CUDA kernels (nvcc), so CPU tests exercise the GPU's arithmetic.
#pragma once

#if defined(__CUDACC__)
#define DRIFT_HD __host__ __device__ __forceinline__
#else
#define DRIFT_HD inline
#endif

// Loop unrolling hints for device code (host compilers get none: g++ warns on the pragma).
#if defined(__CUDA_ARCH__)
#define DRIFT_UNROLL _Pragma("unroll")
#define DRIFT_UNROLL_4 _Pragma("unroll 4")
#define DRIFT_UNROLL_8 _Pragma("unroll 8")
#else
#define DRIFT_UNROLL
#define DRIFT_UNROLL_4
#define DRIFT_UNROLL_8
#endif
