"""Native-level checks of the vocabulary header: the CUDA kernels' block log-sum-exp and warp
arg-max reductions, emulated on the CPU from the same drift/vocab.hpp helpers, must equal a
float64 log-sum-exp and the CPU driver's sequential arg-max scan (bit for bit, NaN and ties
included)."""

from __future__ import annotations


def test_emulated_cuda_reductions_match_cpu_rules(native_program):
    assert native_program("vocab_warp_reductions").endswith(" 0 mismatches")
