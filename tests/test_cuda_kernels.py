"""GPU-only checks of the CUDA kernels (cpp/src/cuda/) against drift's CPU drivers, aimed at
what a CPU cannot exercise: the LCS kernel's shared-memory paths (staged with the >48 KiB
opt-in, or read from global memory where one pair's copy exceeds the device's limit) and its
scratch chunking, rows of logits that are not 16-byte aligned, strided (sliced/transposed)
logits, exact ties and NaN in the OAL arg-max, empty shapes, side streams, a second device
and a (B*T*V) extent beyond 2^31. Every test skips cleanly without a CUDA GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import drift
from drift.ops import lcs as lcs_ops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not (torch.cuda.is_available() and drift.cuda_available()),
                       reason="needs a CUDA GPU and drift's CUDA kernels"),
]

ACC_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}
GRAD_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}


def _lcs_both(a, b, la=None, lb=None):
    cpu = drift.lcs_mask(a, b, la, lb)
    gpu = drift.lcs_mask(a.cuda(), b.cuda(), None if la is None else la.cuda(), None if lb is None else lb.cuda())
    torch.cuda.synchronize()
    return cpu, gpu


def _assert_lcs_equal(cpu, gpu):
    assert torch.equal(cpu.lcs_length, gpu.lcs_length.cpu())
    assert torch.equal(cpu.y, gpu.y.cpu())
    assert torch.equal(cpu.y_prime, gpu.y_prime.cpu())


# ---- LCS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [6145, 12672, 12800, 16384])
def test_lcs_long_y_shared_memory_paths(m):
    """m > 6144 needs the >48 KiB opt-in; above 12672 (sm_86/89: ~99 KiB per block) the
    kernel reads y from global memory; 16384 is the CUDA maximum."""
    rng = np.random.default_rng(m)
    a = torch.from_numpy(rng.integers(0, 40, (2, m)))
    b = torch.from_numpy(rng.integers(0, 40, (2, 3000)))
    la = torch.tensor([m, m - 77])
    lb = torch.tensor([3000, 1234])
    _assert_lcs_equal(*_lcs_both(a, b, la, lb))


@pytest.mark.parametrize("m", [1, 64, 65, 2048, 2049, 8192])
def test_lcs_global_memory_path(monkeypatch, m):
    """The path long y takes on GPUs with ~100 KiB of shared memory, forced on any GPU."""
    monkeypatch.setenv("DRIFT_LCS_CUDA_STAGING", "off")
    rng = np.random.default_rng(m + 1)
    a = torch.from_numpy(rng.integers(0, 6, (3, m)))
    b = torch.from_numpy(rng.integers(0, 6, (3, 900)))
    _assert_lcs_equal(*_lcs_both(a, b, torch.tensor([m, m // 2, 0]), torch.tensor([900, 450, 17])))


@pytest.mark.parametrize("dtypes", [(torch.int32, torch.int32), (torch.int32, torch.int64), (torch.int64, torch.int32)])
def test_lcs_id_dtype_mixes(dtypes):
    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.integers(0, 2**31 - 1, (5, 300))).to(dtypes[0]) % 7
    b = torch.from_numpy(rng.integers(0, 2**31 - 1, (5, 200))).to(dtypes[1]) % 7
    _assert_lcs_equal(*_lcs_both(a, b, torch.tensor([300, 0, 1, 64, 65]), torch.tensor([200, 5, 0, 64, 129])))


def test_lcs_scratch_chunks_and_random_lengths(monkeypatch):
    """A small scratch budget forces many launches over the batch (the history is reused)."""
    monkeypatch.setattr(lcs_ops, "CUDA_SCRATCH_BYTES", 3 * 700 * 11 * 8)
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.integers(0, 9, (37, 700)))
    b = torch.from_numpy(rng.integers(0, 9, (37, 700)))
    la = torch.from_numpy(rng.integers(0, 701, 37))
    lb = torch.from_numpy(rng.integers(0, 701, 37))
    _assert_lcs_equal(*_lcs_both(a, b, la, lb))


def test_lcs_empty_shapes():
    for shape_a, shape_b in [((0, 5), (0, 7)), ((3, 0), (3, 4)), ((3, 4), (3, 0)), ((0, 0), (0, 0))]:
        a = torch.zeros(shape_a, dtype=torch.int64)
        b = torch.zeros(shape_b, dtype=torch.int64)
        _assert_lcs_equal(*_lcs_both(a, b))


def test_lcs_on_a_side_stream():
    rng = np.random.default_rng(9)
    a = torch.from_numpy(rng.integers(0, 5, (8, 500)))
    b = torch.from_numpy(rng.integers(0, 5, (8, 400)))
    cpu = drift.lcs_mask(a, b)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        ga, gb = a.cuda(), b.cuda()
        gpu = drift.lcs_mask(ga, gb)
    stream.synchronize()
    _assert_lcs_equal(cpu, gpu)


# ---- OAL / token log-probs ------------------------------------------------------------------


def _layouts(batch, seq, vocab, dtype, seed):
    """Logits in three layouts with the same values: contiguous, a [:, :-1] slice of a wider
    tensor (row stride vocab + 1: rows off 16-byte boundaries) and a (T, B, V) transpose."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * 3).to(dtype)
    wide = torch.zeros(batch, seq, vocab + 1, dtype=dtype)
    wide[:, :, :vocab] = base
    return {
        "contiguous": base,
        "sliced": wide[:, :, :vocab],
        "transposed": base.transpose(0, 1).contiguous().transpose(0, 1),
    }


def _oal_forward(logits, targets, logits_mask, targets_mask):
    return torch.ops.drift.oal_forward(logits, targets, logits_mask, targets_mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("vocab", [1, 7, 1001, 4099])
def test_oal_forward_backward_layouts(dtype, vocab):
    batch, seq, width = 3, 9, 12
    g = torch.Generator().manual_seed(vocab)
    targets = torch.randint(0, vocab, (batch, width), generator=g)
    targets[:, 5] = targets[:, 1]  # duplicates count once
    logits_mask = torch.rand(batch, seq, generator=g) >= 0.25
    targets_mask = torch.rand(batch, width, generator=g) >= 0.2
    for name, logits in _layouts(batch, seq, vocab, dtype, vocab).items():
        cpu = _oal_forward(logits, targets, logits_mask, targets_mask)
        gpu = _oal_forward(logits.cuda(), targets.cuda(), logits_mask.cuda(), targets_mask.cuda())
        tol = ACC_TOL[dtype]
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=tol, rtol=tol, msg=f"target_logps ({name})")
        torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=tol, rtol=tol, msg=f"lse ({name})")
        assert torch.equal(gpu[2].cpu(), cpu[2]), f"argmax ({name})"
        grad_out = torch.linspace(0.5, 1.5, batch * width, dtype=cpu[0].dtype).reshape(batch, width)
        gcpu = torch.ops.drift.oal_backward(grad_out, logits, targets, cpu[1], cpu[2])
        ggpu = torch.ops.drift.oal_backward(grad_out.cuda(), logits.cuda(), targets.cuda(), gpu[1], gpu[2])
        gt = GRAD_TOL[dtype]
        torch.testing.assert_close(ggpu.cpu().double(), gcpu.double(), atol=gt, rtol=gt, msg=f"grad ({name})")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("vocab", [1001, 4096])
def test_token_logps_layouts(dtype, vocab):
    batch, seq = 2, 11
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.rand(batch, seq, generator=g) >= 0.3
    for name, logits in _layouts(batch, seq, vocab, dtype, 3).items():
        cpu = torch.ops.drift.token_logps_forward(logits, labels, mask)
        gpu = torch.ops.drift.token_logps_forward(logits.cuda(), labels.cuda(), mask.cuda())
        tol = ACC_TOL[dtype]
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=tol, rtol=tol, msg=f"logps ({name})")
        torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=tol, rtol=tol, msg=f"lse ({name})")
        grad_out = torch.linspace(-1.0, 1.0, batch * seq).reshape(batch, seq)
        gcpu = torch.ops.drift.token_logps_backward(grad_out, logits, labels, mask, cpu[1])
        ggpu = torch.ops.drift.token_logps_backward(grad_out.cuda(), logits.cuda(), labels.cuda(), mask.cuda(), gpu[1])
        gt = GRAD_TOL[dtype]
        torch.testing.assert_close(ggpu.cpu().double(), gcpu.double(), atol=gt, rtol=gt, msg=f"grad ({name})")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_oal_exact_ties_go_to_the_lowest_valid_position(dtype):
    """Bitwise-equal rows tie exactly; with an odd V the rows lie at different 16-byte offsets,
    and the CUDA log-sum-exp must still be bitwise equal for them (lowest position wins)."""
    vocab, seq = 1001, 40
    row = (torch.randn(vocab, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    logits = row.expand(2, seq, vocab).contiguous()
    logits_mask = torch.ones(2, seq, dtype=torch.bool)
    logits_mask[0, :3] = False  # the lowest valid position of row 0 is 3
    targets = torch.tensor([[5, 17, 999], [0, 1000, 5]])
    targets_mask = torch.ones_like(targets, dtype=torch.bool)
    cpu = _oal_forward(logits, targets, logits_mask, targets_mask)
    gpu = _oal_forward(logits.cuda(), targets.cuda(), logits_mask.cuda(), targets_mask.cuda())
    assert cpu[2].tolist() == [[3, 3, 3], [0, 0, 0]]
    assert torch.equal(gpu[2].cpu(), cpu[2])
    lse = gpu[1].cpu()
    assert bool((lse[0, 3:] == lse[0, 3]).all()) and bool((lse[1] == lse[1, 0]).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_oal_nan_logits_give_nan_not_a_crash(dtype):
    logits = torch.randn(2, 6, 33).to(dtype)
    logits[0, 2, 4] = float("nan")  # NaN in the lse of position 2 of row 0
    logits[1, 4, 9] = float("nan")  # NaN at a target id of row 1
    targets = torch.tensor([[9, 4, 1], [9, 2, 3]])
    mask_t = torch.ones(2, 6, dtype=torch.bool)
    mask_m = torch.ones(2, 3, dtype=torch.bool)
    cpu = _oal_forward(logits, targets, mask_t, mask_m)
    gpu = _oal_forward(logits.cuda(), targets.cuda(), mask_t.cuda(), mask_m.cuda())
    assert torch.equal(gpu[2].cpu(), cpu[2])
    assert torch.equal(gpu[0].cpu().isnan(), cpu[0].isnan())
    loss = drift.oal_loss(logits.cuda(), targets.cuda(), reduction="none")
    assert bool(loss.isnan().all())


def test_oal_and_token_logps_empty_shapes():
    for batch, seq, width in [(0, 4, 3), (2, 0, 3), (2, 4, 0)]:
        logits = torch.randn(batch, seq, 10)
        targets = torch.zeros(batch, width, dtype=torch.int64)
        out = drift.oal_loss(logits.cuda().requires_grad_(True), targets.cuda(), reduction="sum")
        out.backward()
        assert float(out.detach()) == 0.0
        labels = torch.zeros(batch, seq, dtype=torch.int64)
        logps = drift.token_logps(logits.cuda(), labels.cuda())
        assert logps.shape == (batch, seq)
    torch.cuda.synchronize()


def test_token_logps_beyond_2_31_elements():
    """B*T*V > 2^31: element offsets must be 64-bit in every kernel (forward and backward)."""
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    batch, seq, vocab = 2, 8193, 131072  # 2 * 8193 * 131072 = 2^31 + 262144 elements, bf16
    logits = torch.zeros(batch, seq, vocab, dtype=torch.bfloat16, device="cuda")
    logits[1, -1, 7] = 4.0  # the last row lies past 2^31 elements
    labels = torch.full((batch, seq), 7, dtype=torch.int64, device="cuda")
    mask = torch.zeros(batch, seq, dtype=torch.bool, device="cuda")
    mask[1, -1] = True
    logps, lse = torch.ops.drift.token_logps_forward(logits, labels, mask)
    expected = torch.log_softmax(logits[1, -1].double(), dim=0)[7].item()
    assert abs(logps[1, -1].item() - expected) < 1e-4
    grad = torch.ops.drift.token_logps_backward(torch.ones_like(logps), logits, labels, mask, lse)
    last = grad[1, -1].double()
    reference = -torch.softmax(logits[1, -1].double(), dim=0)
    reference[7] += 1.0
    torch.testing.assert_close(last, reference, atol=1e-2, rtol=1e-2)
    assert not bool(grad[0].any()) and not bool(grad[1, :-1].any())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device_and_current_device_kept():
    torch.cuda.set_device(0)
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.integers(0, 6, (4, 300)))
    b = torch.from_numpy(rng.integers(0, 6, (4, 250)))
    cpu = drift.lcs_mask(a, b)
    gpu = drift.lcs_mask(a.to("cuda:1"), b.to("cuda:1"))
    assert torch.cuda.current_device() == 0
    _assert_lcs_equal(cpu, gpu)
    logits = torch.randn(2, 5, 50)
    targets = torch.randint(0, 50, (2, 4))
    ref = drift.oal_loss(logits, targets, reduction="none")
    out = drift.oal_loss(logits.to("cuda:1"), targets.to("cuda:1"), reduction="none")
    assert torch.cuda.current_device() == 0
    torch.testing.assert_close(out.cpu(), ref, atol=2e-5, rtol=2e-5)


def test_id_range_checks_match_the_cpu_messages():
    """The CUDA launchers check ids themselves (one small kernel): same verdicts and messages as
    the CPU drivers, the first bad id in row-major order named, masked-out ids ignored."""
    logits = torch.randn(2, 5, 11)
    targets = torch.tensor([[1, 2, 30, 4], [-7, 3, 12, 0]])
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 99, 8, -1]])
    for device in ("cpu", "cuda"):
        x, t, lab = logits.to(device), targets.to(device), labels.to(device)
        with pytest.raises(ValueError, match=r"^targets: id 30 outside \[0, 11\)$"):
            drift.oal_loss(x, t)
        with pytest.raises(ValueError, match=r"^labels: id 99 outside \[0, 11\)$"):
            drift.token_logps(x, lab)
        ok_t = torch.tensor([[True, True, False, True], [False, True, False, True]], device=device)
        ok_l = torch.tensor([[True] * 5, [True, True, False, True, False]], device=device)
        drift.oal_loss(x, t, targets_mask=ok_t)  # masked-out ids are never read
        drift.token_logps(x, lab, ok_l)
    lcs_y = torch.tensor([[1, -2, 3]])
    for device in ("cpu", "cuda"):
        with pytest.raises(ValueError, match="negative token ids"):
            drift.lcs_mask(lcs_y.to(device), torch.tensor([[1, 3]], device=device))
        with pytest.raises(ValueError, match="y_lengths"):
            drift.lcs_mask(lcs_y.abs().to(device), torch.tensor([[1, 3]], device=device), torch.tensor([4], device=device))
