"""Native-level checks of the LCS header: the CUDA kernel's lane-parallel carry scheme,
emulated on the CPU from the same drift/lcs.hpp, must equal the serial column step."""

from __future__ import annotations


def test_lane_parallel_carries_equal_serial_step(native_program):
    assert native_program("lcs_lane_carries").endswith("0 mismatches")


def test_emulated_warp_kernel_equals_naive_dp(native_program):
    """One warp of the CUDA kernel per pair (staging, both match-word paths, ballots, history,
    traceback; all from drift/lcs.hpp) against a naive DP with the same tie-break."""
    assert native_program("lcs_warp_kernel").endswith(" 0 mismatches")
