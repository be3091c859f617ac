"""Robustness: no input may abort, silently mislead, or take gigabytes.

One test (or parametrized group) per finding, named for what it guards. Tests that need a
fresh process (resource limits, peak RSS) run a short script in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import drift
from drift import reference


def run_script(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter that imports this tree's drift."""
    from conftest import drift_env

    env = drift_env({"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})  # the drift imported here (maybe staged)
    for key in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "HOME"):
        if key in os.environ:
            env[key] = os.environ[key]
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


SANITIZED = drift.build_info()["sanitized"]
no_rlimit_under_asan = pytest.mark.skipif(SANITIZED, reason="ASan reserves terabytes of address space")


# --- 1. a thread that cannot be created ------------------------------------------------------

@no_rlimit_under_asan
def test_thread_creation_failure_does_not_abort():
    """Under an address-space limit, 256 requested threads cannot all start: the call must go
    on with fewer (it used to end the interpreter with 'terminate called', exit 134)."""
    result = run_script("""
        import resource, torch, drift
        def vm_bytes():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        torch.manual_seed(0)
        y, yp = torch.randint(0, 5, (256, 40)), torch.randint(0, 5, (256, 30))
        logits, labels = torch.randn(4, 64, 50), torch.randint(0, 50, (4, 64))
        drift.set_num_threads(1)
        want = (*drift.lcs_mask(y, yp), drift.token_logps(logits, labels), drift.oal_loss(logits, labels))
        limit = vm_bytes() + (256 << 20)   # room for a few 8 MiB thread stacks, not 255
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        drift.set_num_threads(256)
        got = (*drift.lcs_mask(y, yp), drift.token_logps(logits, labels), drift.oal_loss(logits, labels))
        assert all(torch.equal(a, b) for a, b in zip(want, got))
        print("same results")
    """)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "same results" in result.stdout


# --- 2. pad_id outside the ids' dtype ---------------------------------------------------------

@pytest.mark.parametrize("pad_id", [2**32, 2**32 + 8, -(2**31) - 1, 2**70, -(2**70), np.uint64(2**64 - 1)])
@pytest.mark.parametrize("kind", ["torch-int32", "numpy-int32", "torch-int64"])
def test_pad_id_outside_the_id_dtype_marks_no_padding(pad_id, kind):
    """pad_id = 2**32 + 8 used to wrap to 8 for int32 ids and mark id 8 as padding."""
    rows_y, rows_yp = [[3, 8, 0, 0]], [[8, 0, 3, 0]]
    if kind == "numpy-int32":
        y, yp = np.array(rows_y, dtype=np.int32), np.array(rows_yp, dtype=np.int32)
    else:
        dtype = torch.int32 if kind == "torch-int32" else torch.int64
        y, yp = torch.tensor(rows_y, dtype=dtype), torch.tensor(rows_yp, dtype=dtype)
    out = drift.lcs_mask(y, yp, pad_id=pad_id)
    ref_y, ref_yp, ref_len = reference.lcs_mask(rows_y, rows_yp, pad_id=int(pad_id))
    assert np.asarray(out.y).tolist() == ref_y and np.asarray(out.y_prime).tolist() == ref_yp
    assert np.asarray(out.lcs_length).tolist() == ref_len == [3]


def test_pad_id_inside_the_id_dtype_still_pads_int32():
    out = drift.lcs_mask(torch.tensor([[3, 8, 0]], dtype=torch.int32), torch.tensor([[8, 0]], dtype=torch.int32),
                         pad_id=np.int16(0))
    assert out.lcs_length.tolist() == [1] and out.y.tolist() == [[True, False, False]]


# --- 3. memory proportional to the answer ----------------------------------------------------

MEMORY_SCRIPT = """
    import resource, torch, drift
    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    y = torch.arange(200000)[None]
    drift.lcs_mask(torch.tensor([[1, 2]]), torch.tensor([[2]]))   # warm-up: lazy allocations
    base = peak_mib()
    {call}
    print(f"EXTRA {{peak_mib() - base:.1f}}")
"""


def extra_peak_mib(call: str) -> float:
    result = run_script(MEMORY_SCRIPT.format(call=call))
    assert result.returncode == 0, result.stdout + result.stderr
    return float(result.stdout.split("EXTRA")[1])


@pytest.mark.skipif(SANITIZED, reason="ASan's shadow memory and quarantine inflate RSS")
def test_lcs_memory_one_long_vs_one_short_under_100_mib():
    """1 x 200000 distinct ids against 1 x 1 used to peak at ~5 GB (a match-table row for
    every distinct token of y); the documented bound makes it a few MiB."""
    out_of = "out = drift.lcs_mask(y, torch.tensor([[7]])); assert out.lcs_length.tolist() == [1]"
    assert extra_peak_mib(out_of) < 100
    swapped = "out = drift.lcs_mask(torch.tensor([[7]]), y); assert out.lcs_length.tolist() == [1]"
    assert extra_peak_mib(swapped) < 100


@pytest.mark.skipif(SANITIZED, reason="ASan's shadow memory and quarantine inflate RSS")
def test_lcs_memory_does_not_grow_with_requested_threads():
    """set_num_threads(10**7) then a 3-pair call used to allocate 2.1 GB of per-thread scratch."""
    call = ("drift.set_num_threads(10**7); "
            "out = drift.lcs_mask(torch.randint(0, 9, (3, 50)), torch.randint(0, 9, (3, 40))); "
            "assert drift.get_num_threads() == 256")
    assert extra_peak_mib(call) < 50


def test_lcs_memory_bound_is_documented():
    doc = drift.lcs_mask.__doc__
    assert "Memory (CPU)" in doc and "Nothing grows" in doc and "ceil(m/64)" in doc


# --- set_num_threads -------------------------------------------------------------------------

def test_set_num_threads_caps_at_max_threads():
    before = drift.get_num_threads()
    try:
        for n, want in [(2**40, 256), (2**70, 256), (np.int64(3), 3), (np.uint64(2**64 - 1), 256), (257, 256)]:
            drift.set_num_threads(n)
            assert drift.get_num_threads() == want
        with pytest.raises(ValueError, match="n: expected >= 0"):
            drift.set_num_threads(-1)
        for bad in (1.5, True, "4", np.bool_(True)):
            with pytest.raises(TypeError, match="n: expected an int"):
                drift.set_num_threads(bad)
    finally:
        drift.set_num_threads(0)
    assert drift.get_num_threads() == before
    assert drift._native.MAX_THREADS == 256 and "256" in drift.set_num_threads.__doc__


# --- 4. double backward ----------------------------------------------------------------------

def _hessian_vector(fn, x):
    out = fn(x)
    weights = torch.arange(1, out.numel() + 1, dtype=out.dtype).view_as(out)
    (g,) = torch.autograd.grad((out * weights).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad((g * g.detach().sign() * g).sum(), x)
    return h


@pytest.mark.parametrize("which", ["token_logps", "oal_loss"])
def test_double_backward_matches_reference_and_gradgradcheck(which):
    """Double backward used to return no second-order term with only a warning."""
    torch.manual_seed(1)
    x = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    labels, mask = torch.randint(0, 7, (2, 5)), torch.rand(2, 5) > 0.3
    if which == "token_logps":
        fused = lambda z: drift.token_logps(z, labels, mask)  # noqa: E731
        naive = lambda z: reference.token_logps(z, labels, mask)  # noqa: E731
    else:
        tmask, lmask = torch.rand(2, 5) > 0.2, torch.rand(2, 5) > 0.2
        fused = lambda z: drift.oal_loss(z, labels, logits_mask=lmask, targets_mask=tmask, reduction="none")  # noqa: E731
        naive = lambda z: reference.oal_loss(z, labels, logits_mask=lmask, targets_mask=tmask, reduction="none")  # noqa: E731
    torch.testing.assert_close(_hessian_vector(fused, x), _hessian_vector(naive, x))
    assert torch.autograd.gradgradcheck(fused, (x,))


def test_double_backward_float32_logits_close_to_float64():
    torch.manual_seed(2)
    x64 = torch.randn(1, 4, 6, dtype=torch.float64)
    labels = torch.randint(0, 6, (1, 4))
    x32 = x64.float().requires_grad_(True)
    h32 = _hessian_vector(lambda z: drift.token_logps(z, labels), x32)
    h64 = _hessian_vector(lambda z: reference.token_logps(z, labels), x64.clone().requires_grad_(True))
    torch.testing.assert_close(h32.double(), h64, atol=1e-4, rtol=1e-4)


# --- 5. valid inputs that were rejected --------------------------------------------------------

@pytest.mark.parametrize("shape", [(0, 3, 5), (2, 0, 5), (0, 0, 1)])
def test_empty_logits_with_non_unit_vocab_stride_are_accepted(shape):
    logits = torch.randn(shape[0], shape[2], shape[1]).transpose(1, 2).requires_grad_(True)
    labels = torch.zeros(shape[:2], dtype=torch.long)
    lp = drift.token_logps(logits, labels)
    assert lp.shape == shape[:2]
    loss = drift.oal_loss(logits, torch.zeros(shape[0], 2, dtype=torch.long), reduction="sum")
    (lp.sum() + loss).backward()
    assert logits.grad.shape == logits.shape and not logits.grad.any()


@pytest.mark.parametrize("lengths", [[], np.array([], dtype=np.int64), torch.zeros(0, dtype=torch.long), ()])
def test_lcs_mask_empty_batch_with_empty_lengths(lengths):
    out = drift.lcs_mask(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long), lengths, lengths)
    assert out.y.shape == (0, 3) and out.y_prime.shape == (0, 2) and out.lcs_length.shape == (0,)
    out = drift.lcs_mask(np.zeros((0, 3), dtype=np.int32), np.zeros((0, 2), dtype=np.int32), lengths, lengths)
    assert out.y.shape == (0, 3) and out.lcs_length.shape == (0,)


# --- 6. contract surprises ---------------------------------------------------------------------

def _drift_args(seed=0, B=2, T=5, V=6):
    g = torch.Generator().manual_seed(seed)
    cl, rl = torch.randn(B, T, V, generator=g), torch.randn(B, T, V, generator=g)
    clab, rlab = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)
    cm, rm = torch.rand(B, T, generator=g) > 0.4, torch.rand(B, T, generator=g) > 0.4
    return [cl, clab, cm, rl, rlab, rm, torch.randn(B, generator=g), torch.randn(B, generator=g)]


def test_drift_loss_chosen_labels_outside_the_response_mask_are_never_oal_targets():
    """With chosen_response_mask, chosen_labels outside it may be anything (here 99 >= V, which as a target raises)."""
    args = _drift_args()
    args[1] = torch.where(args[2], args[1], 99)  # anything outside the masks, here 99 >= V
    out = drift.drift_loss(*args, chosen_response_mask=args[2])
    explicit = drift.drift_loss(*args, oal_targets=args[1], oal_targets_mask=args[2])
    torch.testing.assert_close(out.loss, explicit.loss)
    ref = reference.drift_loss(*args, chosen_response_mask=args[2])
    torch.testing.assert_close(out.oal_loss, ref[2])
    torch.testing.assert_close(out.loss.double(), ref[0].double())


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a, kw: kw.update(oal_targets=torch.full((2, 3), 99)), "oal_targets: id 99 outside"),
        (lambda a, kw: kw.update(oal_targets=torch.zeros(2, 3, dtype=torch.long),
                                 oal_targets_mask=torch.ones(2, 3)), "oal_targets_mask: expected a bool"),
        (lambda a, kw: kw.update(rejected_response_mask=torch.ones(2, 4, dtype=torch.bool)), "rejected_response_mask: expected shape"),
        (lambda a, kw: a.__setitem__(1, torch.where(a[2], 99, a[1])), "chosen_labels: id 99 outside"),
        (lambda a, kw: a.__setitem__(4, a[4].float()), "rejected_labels: expected integer"),
        (lambda a, kw: a.__setitem__(3, a[3][..., :0]), "rejected_logits: the vocabulary"),
    ],
)
def test_drift_loss_errors_name_its_own_arguments(change, match):
    args, kw = _drift_args(), {}
    change(args, kw)
    with pytest.raises((TypeError, ValueError), match=match):
        drift.drift_loss(*args, **kw)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dam_loss_sums_half_precision_token_logps_in_float32(dtype):
    """bf16 token log-probs used to be summed in bf16 (50.625 vs 50.577 in float64)."""
    torch.manual_seed(3)
    pc = (-torch.rand(2, 400) * 0.5).to(dtype)
    pr = (-torch.rand(2, 300) * 0.5).to(dtype)
    mc, mr = torch.ones(2, 400, dtype=torch.bool), torch.ones(2, 300, dtype=torch.bool)
    rc, rr = torch.tensor([-90.0, -80.0]), torch.tensor([-60.0, -70.0])
    out = drift.dam_loss(pc, pr, rc, rr, mc, mr, beta=0.1)
    exact = reference.dam_loss(pc.double(), pr.double(), rc.double(), rr.double(), mc, mr, beta=0.1)
    torch.testing.assert_close(out.margins.double(), exact[3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss.double(), exact[0], atol=1e-6, rtol=1e-6)
    assert out.loss.dtype == torch.float32
    half_sum_error = (pc.sum(-1).double() - pc.double().sum(-1)).abs().max()
    assert half_sum_error > 1e-3  # the half-precision sum this guards against is really off


def test_spin_loss_empty_batch_is_zero_like_reference():
    z = torch.zeros(0)
    out = drift.spin_loss(z, z, z, z)
    assert out.loss.item() == 0.0 and reference.spin_loss(z, z, z, z)[0].item() == 0.0
    out = drift.dam_loss(torch.zeros(0, 3), torch.zeros(0, 2), z, z, torch.zeros(0, 3, dtype=torch.bool),
                         torch.zeros(0, 2, dtype=torch.bool))
    assert out.loss.item() == 0.0


# --- 7. unclear errors -------------------------------------------------------------------------

L = torch.tensor([[1, 2]])


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: drift.lcs_mask([[2**63]], [[1]]), ValueError, r"y\[0\]: id 9223372036854775808 outside the int64 range"),
        (lambda: drift.lcs_mask([[1]], [[-1, 2**64]]), ValueError, r"y_prime\[0\]: id 18446744073709551616 outside"),
        (lambda: drift.lcs_mask(np.array([[2**63]], dtype=np.uint64), np.array([[1]], dtype=np.uint64)), ValueError, "y: id"),
        (lambda: drift.lcs_mask([[1, [2]]], [[1]]), TypeError, r"y\[0\]"),
        (lambda: drift.lcs_mask(L.to_sparse(), L), TypeError, "y: expected a dense"),
        (lambda: drift.lcs_mask(L, L.to_sparse()), TypeError, "y_prime: expected a dense"),
        (lambda: drift.lcs_mask(L.to("meta"), L.to("meta")), ValueError, "y: unsupported device meta"),
        (lambda: drift.lcs_mask(torch.nested.nested_tensor([torch.tensor([1, 2]), torch.tensor([3])]), L),
         TypeError, "y: expected a dense torch.Tensor, got a nested"),
        (lambda: drift.lcs_mask(L, L, L[0].to_sparse()), TypeError, "y_lengths: expected a dense"),
        (lambda: drift.lcs_mask(L.to(torch.uint16), L), TypeError, r"y: expected integer token ids \(int8, int16, int32, int64 or uint8\), got torch.uint16"),
        (lambda: drift.lcs_mask(L, L, pad_id=np.bool_(True)), TypeError, "pad_id: expected an int"),
        (lambda: drift.token_logps(torch.randn(1, 2, 3).to_sparse(), L), TypeError, "logits: expected a dense"),
        (lambda: drift.token_logps(torch.randn(1, 2, 3), L.to(torch.uint16)), TypeError, r"labels: expected integer token ids \(int8"),
        (lambda: drift.token_logps(torch.randn(1, 2, 3, device="meta"), L.to("meta")), ValueError, "logits: unsupported device meta"),
        (lambda: drift.oal_loss(torch.randn(1, 2, 3), L, targets_mask=torch.ones(1, 2, dtype=torch.uint8)), TypeError, "targets_mask: expected a bool"),
        (lambda: drift.spin_loss(*[torch.zeros(2)] * 4, beta=np.bool_(True)), TypeError, "beta: expected a float"),
        (lambda: drift.spin_loss(*[torch.zeros(2).to_sparse()] * 4), TypeError, "policy_chosen_logps: expected a dense"),
    ],
)
def test_bad_inputs_raise_clear_errors_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_big_endian_numpy_ids_and_lengths_are_accepted():
    y, yp = np.array([[5, 1, 2, 9]], dtype=">i8"), np.array([[2, 1, 9]], dtype=">i4")
    out = drift.lcs_mask(y, yp, np.array([4], dtype=">i8"), np.array([3], dtype=">i2"))
    want = drift.lcs_mask(y.astype("<i8"), yp.astype("<i4"))
    assert np.array_equal(out.y, want.y) and np.array_equal(out.y_prime, want.y_prime)
    assert out.lcs_length.tolist() == reference.lcs_mask(y, yp)[2]


@pytest.mark.parametrize("scalar", [np.float32(0.1), np.float64(0.1), np.float16(0.1), np.int64(1), 1])
def test_numpy_scalars_accepted_for_beta_and_oal_weight(scalar):
    z = torch.zeros(2)
    assert torch.isfinite(drift.spin_loss(z, z, z, z, beta=scalar).loss)
    assert torch.isfinite(drift.drift_loss(*_drift_args(), beta=scalar, oal_weight=scalar).loss)
    assert drift.DriftLoss(beta=scalar, oal_weight=scalar).oal_weight == float(scalar)


def _op_calls():
    x, ids, m = torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)
    acc = torch.zeros(2, 3)
    ops = torch.ops.drift
    return [
        (lambda: ops.token_logps_forward(x[0], ids, m), ValueError, "token_logps_forward: logits: expected a 3-D"),
        (lambda: ops.token_logps_forward(x, ids[0], m), ValueError, "token_logps_forward: labels: expected a 2-D"),
        (lambda: ops.token_logps_forward(x, ids, m.to(torch.uint8)), TypeError, "token_logps_forward: mask: expected dtype in \\(bool\\)"),
        (lambda: ops.token_logps_forward(x, ids.int(), m), TypeError, "token_logps_forward: labels: expected dtype in \\(int64\\)"),
        (lambda: ops.token_logps_backward(acc[0], x, ids, m, acc), ValueError, "token_logps_backward: grad_logps: expected a 2-D"),
        (lambda: ops.token_logps_backward(acc, x, ids, m, acc[:, :2]), ValueError, "token_logps_backward: lse: expected shape"),
        (lambda: ops.oal_forward(x, ids[0], m, m), ValueError, "oal_forward: targets: expected a 2-D"),
        (lambda: ops.oal_forward(x, ids, m, m[:, :2]), ValueError, "oal_forward: targets_mask: expected shape"),
        (lambda: ops.oal_forward(x, ids, m.to(torch.uint8), m), TypeError, "oal_forward: logits_mask: expected dtype in \\(bool\\)"),
        (lambda: ops.oal_backward(acc, x, ids, acc, ids[0]), ValueError, "oal_backward: argmax: expected a 2-D"),
        (lambda: ops.oal_backward(acc.double(), x, ids, acc, ids), TypeError, "oal_backward: grad_target_logps: expected dtype in \\(float32\\)"),
    ]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("index", range(len(_op_calls())))
def test_direct_op_calls_with_wrong_ranks_or_dtypes_raise_naming_op_and_argument(index, device):
    """Wrong ranks used to raise IndexError / 'not enough values to unpack' from the fake kernels,
    and a uint8 mask was read as bool."""
    call, exc, match = _op_calls()[index]
    if device == "meta":
        with torch.device("meta"):
            call, exc, match = _op_calls()[index]
    with pytest.raises(exc, match=match):
        call()


def test_native_layer_refuses_uint8_as_bool():
    from drift._native import _C, capsule

    x, ids = torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.long)
    out, lse = torch.empty(1, 2), torch.empty(1, 2)
    with pytest.raises(ValueError, match="mask: unexpected dtype uint8"):
        _C.token_logps_forward(capsule(x), capsule(ids), capsule(torch.full((1, 2), 2, dtype=torch.uint8)),
                               capsule(out), capsule(lse))
    y, lens = torch.zeros(1, 3, dtype=torch.long), torch.tensor([3])
    with pytest.raises(ValueError, match="mask_y: unexpected dtype uint8"):
        _C.lcs_mask(capsule(y), capsule(y), capsule(lens), capsule(lens), capsule(torch.empty(1, 3, dtype=torch.uint8)),
                    capsule(torch.empty(1, 3, dtype=torch.bool)), capsule(torch.empty(1, dtype=torch.long)))
