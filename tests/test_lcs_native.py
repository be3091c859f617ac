"""Native-level checks of the LCS header: the CUDA kernel's lane-parallel carry scheme,
emulated on the CPU from the same drift/lcs.hpp, must equal the serial column step."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_lane_parallel_carries_equal_serial_step(tmp_path):
    exe = tmp_path / "lcs_lane_carries"
    subprocess.run(
        ["g++", "-O2", "-std=c++17", f"-I{ROOT / 'cpp' / 'include'}", str(ROOT / "cpp" / "tests" / "lcs_lane_carries.cpp"),
         "-o", str(exe)],
        check=True,
    )
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 mismatches")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_emulated_warp_kernel_equals_naive_dp(tmp_path):
    """One warp of the CUDA kernel per pair (staging, both match-word paths, ballots, history,
    traceback; all from drift/lcs.hpp) against a naive DP with the same tie-break."""
    exe = tmp_path / "lcs_warp_kernel"
    subprocess.run(
        ["g++", "-O2", "-std=c++17", f"-I{ROOT / 'cpp' / 'include'}", str(ROOT / "cpp" / "tests" / "lcs_warp_kernel.cpp"),
         "-o", str(exe)],
        check=True,
    )
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(" 0 mismatches")
