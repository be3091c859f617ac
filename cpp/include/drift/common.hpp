// Portability macros shared by every algorithm header: the same inline code compiles into the
// CPU drivers (g++) and the CUDA kernels (nvcc), so CPU tests exercise the GPU's arithmetic.
#pragma once

#if defined(__CUDACC__)
#define DRIFT_HD __host__ __device__ __forceinline__
#else
#define DRIFT_HD inline
#endif
