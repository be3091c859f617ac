"""Native-level checks of the OAL header: the CUDA kernels' block log-sum-exp and warp arg-max
reductions, emulated on the CPU from the same drift/oal.hpp helpers, must equal a float64
log-sum-exp and the CPU driver's sequential arg-max scan (bit for bit, NaN and ties included)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_emulated_cuda_reductions_match_cpu_rules(tmp_path):
    exe = tmp_path / "oal_warp_reductions"
    subprocess.run(
        ["g++", "-O2", "-std=c++17", f"-I{ROOT / 'cpp' / 'include'}",
         str(ROOT / "cpp" / "tests" / "oal_warp_reductions.cpp"), "-o", str(exe)],
        check=True,
    )
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(" 0 mismatches")
