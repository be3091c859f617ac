// CUDA driver for the fused OAL / token log-prob kernels (filled in by the fused-loss work).
#include "drivers.hpp"
