"""drift.oal_loss (fused occurrence-aware loss) against drift.reference.oal_loss: the checks of its own
(the checks it shares with drift.token_logps are in test_vocab_ops.py)."""

from __future__ import annotations

import math

import pytest
import torch

import drift
from drift import reference
from _vocab_helpers import OAL
from _vocab_helpers import fused_and_reference as _fused_and_reference
from _vocab_helpers import make_oal as make


def fused_and_reference(logits, targets, reduction="none", **masks):
    """drift's loss and gradient on the logits' device; the float64 reference always on the CPU."""
    return _fused_and_reference(drift.oal_loss, reference.oal_loss, logits, (targets,),
                                dict(reduction=reduction, **masks), OAL.upstream)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_and_default_masks(reduction):
    logits, targets, _, targets_mask = make(3, 6, 101, 8)
    targets = torch.where(targets_mask, targets, torch.full_like(targets, -100))
    out, grad, ref, ref_grad = fused_and_reference(logits, targets, reduction=reduction)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, atol=1e-5, rtol=1e-5)
    rows = drift.oal_loss(logits, targets, reduction="none")
    expected = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / 3}[reduction]
    torch.testing.assert_close(out, expected)


def test_uint8_156_is_a_target_and_int8_minus_100_the_ignore_index():
    # 156 is -100 wrapped to uint8; as a target it counts like the int64 id 156.
    logits = make(1, 4, 200, 1)[0]
    want = reference.oal_loss(logits.double(), torch.tensor([[156, 3]]), reduction="none")
    assert want.item() > 0
    for dtype in (torch.uint8, torch.int16):
        targets = torch.tensor([[156, 3]], dtype=dtype)
        got = drift.oal_loss(logits, targets, reduction="none")
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reference.oal_loss(logits.double(), targets, reduction="none"), want, atol=0, rtol=0)
    only_3 = reference.oal_loss(logits.double(), torch.tensor([[3]]), reduction="none")
    targets = torch.tensor([[-100, 3, -100]], dtype=torch.int8)
    torch.testing.assert_close(drift.oal_loss(logits, targets, reduction="none").double(), only_3, atol=1e-5, rtol=1e-5)


def test_duplicates_count_once():
    logits, _, _, _ = make(1, 5, 20, 1)
    once = drift.oal_loss(logits, torch.tensor([[3, 7]]))
    twice = drift.oal_loss(logits, torch.tensor([[3, 7, 3, 7, 7]]))
    torch.testing.assert_close(once, twice)
    by_hand = -logits[0].log_softmax(-1)[:, [3, 7]].max(0).values.sum()
    torch.testing.assert_close(once, by_hand, atol=1e-5, rtol=1e-5)


def test_exact_tie_gives_gradient_to_lowest_position():
    logits, _, _, _ = make(1, 6, 30, 1)
    logits[0, 4] = logits[0, 1]  # identical rows: the max over positions is an exact tie
    logits[0, 1, 9] = logits[0, 4, 9] = 20.0
    x = logits.clone().requires_grad_(True)
    drift.oal_loss(x, torch.tensor([[9]])).backward()
    assert bool((x.grad[0, 1] != 0).any())
    assert bool((x.grad[0, 4] == 0).all())
    assert bool((x.grad[0, [0, 2, 3, 5]] == 0).all())
    # The one-hot term: d/dlogit[v] = softmax[v] - 1 at the arg-max row.
    p = logits[0, 1].softmax(-1)
    torch.testing.assert_close(x.grad[0, 1], p - torch.nn.functional.one_hot(torch.tensor(9), 30).float())


def test_rows_without_positions_or_targets_contribute_zero():
    logits, targets, _, _ = make(3, 4, 17, 3)
    logits_mask = torch.ones(3, 4, dtype=torch.bool)
    targets_mask = torch.ones(3, 3, dtype=torch.bool)
    logits_mask[0] = False  # no valid position
    targets_mask[1] = False  # no valid target
    x = logits.clone().requires_grad_(True)
    rows = drift.oal_loss(x, targets, logits_mask=logits_mask, targets_mask=targets_mask, reduction="none")
    assert rows[0].item() == 0 and rows[1].item() == 0 and rows[2].item() > 0
    rows.sum().backward()
    assert bool((x.grad[:2] == 0).all())
    mean = drift.oal_loss(logits, targets, logits_mask=logits_mask, targets_mask=targets_mask)
    torch.testing.assert_close(mean, rows.detach().sum() / 3)  # mean over all B rows


def test_vocabulary_of_one_and_empty_shapes():
    out = drift.oal_loss(torch.randn(2, 3, 1), torch.zeros(2, 4, dtype=torch.int64), reduction="none")
    assert torch.equal(out, torch.zeros(2))
    assert drift.oal_loss(torch.randn(2, 3, 5), torch.zeros(2, 0, dtype=torch.int64)).item() == 0
    assert drift.oal_loss(torch.randn(2, 0, 5), torch.zeros(2, 3, dtype=torch.int64)).item() == 0
    assert drift.oal_loss(torch.randn(0, 3, 5), torch.zeros(0, 3, dtype=torch.int64), reduction="none").shape == (0,)


def test_nan_logits_give_nan_not_a_crash():
    logits, targets, _, _ = make(2, 4, 40, 3)
    logits[0, 1, 5] = float("nan")
    x = logits.clone().requires_grad_(True)
    rows = drift.oal_loss(x, targets, reduction="none")
    assert math.isnan(rows[0].item()) and math.isfinite(rows[1].item())
    rows.sum().backward()
    assert bool(torch.isfinite(x.grad[1]).all())


def test_masked_vocabulary_and_extreme_logits():
    logits, targets, logits_mask, targets_mask = make(2, 5, 64, 4, scale=1.0)
    for variant in (logits * 1e4, torch.where(torch.arange(64) < 16, float("-inf"), logits)):
        tg = targets % 48 + 16
        out = drift.oal_loss(variant, tg, logits_mask=logits_mask, targets_mask=targets_mask, reduction="none")
        ref = reference.oal_loss(variant, tg, logits_mask=logits_mask, targets_mask=targets_mask, reduction="none")
        torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-5)


def test_row_views_need_no_copy():
    logits, targets, logits_mask, targets_mask = make(2, 9, 77, 5)
    view = logits[:, 1:]
    out = drift.oal_loss(view, targets, logits_mask=logits_mask[:, 1:], targets_mask=targets_mask, reduction="none")
    ref = reference.oal_loss(view, targets, logits_mask=logits_mask[:, 1:], targets_mask=targets_mask,
                             reduction="none")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_torch_compile():
    logits, targets, logits_mask, targets_mask = make(2, 5, 37, 4)
    labels = torch.randint(0, 37, (2, 5))

    def loss_fn(x):
        lp = drift.token_logps(x, labels, logits_mask)
        return drift.oal_loss(x, targets, logits_mask=logits_mask, targets_mask=targets_mask) - lp.sum()

    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    eager, got = loss_fn(x1), compiled(x2)
    eager.backward()
    got.backward()
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(x2.grad, x1.grad)


def _bad(**kw):
    base = dict(logits=torch.randn(2, 3, 5), targets=torch.zeros(2, 4, dtype=torch.int64))
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (_bad(logits=torch.randn(2, 3)), ValueError, "logits"),
        (_bad(logits=torch.zeros(2, 3, 5, dtype=torch.int32)), TypeError, "logits"),
        (_bad(logits=torch.randn(2, 3, 0)), ValueError, "logits"),
        (_bad(targets=torch.zeros(2, 4)), TypeError, "targets"),
        (_bad(targets=torch.zeros(4, dtype=torch.int64)), ValueError, "targets"),
        (_bad(targets=torch.zeros(3, 4, dtype=torch.int64)), ValueError, "targets"),
        (_bad(targets=torch.zeros(2, 4, dtype=torch.int64, device="meta")), ValueError, "targets"),
        (_bad(targets=torch.full((2, 4), 5)), ValueError, "targets"),
        (_bad(targets=torch.full((2, 4), -1)), ValueError, "targets"),
        (_bad(targets_mask=torch.ones(2, 4, dtype=torch.bool), targets=torch.full((2, 4), -100)), ValueError,
         "targets"),
        (_bad(logits_mask=torch.ones(2, 3)), TypeError, "logits_mask"),
        (_bad(logits_mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, "logits_mask"),
        (_bad(targets_mask=torch.ones(2, 3, dtype=torch.bool)), ValueError, "targets_mask"),
        (_bad(reduction="avg"), ValueError, "reduction"),
        (_bad(reduction=None), ValueError, "reduction"),
    ],
)
def test_bad_inputs(kwargs, error, name):
    logits = kwargs.pop("logits")
    targets = kwargs.pop("targets")
    with pytest.raises(error, match=name):
        drift.oal_loss(logits, targets, **kwargs)


def test_padding_ids_ignored_with_mask():
    logits, targets, _, _ = make(2, 3, 9, 4)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False]])
    padded = torch.where(mask, targets, torch.full_like(targets, 12345))  # out of range, but masked
    torch.testing.assert_close(drift.oal_loss(logits, padded, targets_mask=mask),
                               reference.oal_loss(logits, targets, targets_mask=mask))


# ---- property test and the native entry points ------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3), seq=st.integers(0, 6), vocab=st.integers(1, 70), width=st.integers(0, 6),
    seed=st.integers(0, 2**31 - 1), pad_prob=st.floats(0.0, 1.0),
)
def test_property_matches_reference(batch, seq, vocab, width, seed, pad_prob):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * 4
    targets = torch.randint(0, min(vocab, 5), (batch, width), generator=g)  # many duplicates
    targets_mask = torch.rand(batch, width, generator=g) >= pad_prob
    logits_mask = torch.rand(batch, seq, generator=g) >= pad_prob
    out, grad, ref, ref_grad = fused_and_reference(logits, targets, logits_mask=logits_mask,
                                                   targets_mask=targets_mask)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=1e-12)


def test_native_backward_rejects_bad_argmax_and_capsules():
    from drift._native import _C, capsule

    tensors = OAL.native_views(5)
    logits, targets = tensors["logits"], tensors["targets"]
    argmax = torch.full((2, 4), 3, dtype=torch.int64)  # position T: out of range
    grad = torch.empty_like(logits)
    with pytest.raises(ValueError, match="argmax"):
        _C.oal_backward(capsule(torch.ones(2, 4)), capsule(logits), capsule(targets), capsule(torch.zeros(2, 3)),
                        capsule(argmax), capsule(grad))
    with pytest.raises(ValueError, match="grad_logits"):
        _C.oal_backward(capsule(torch.ones(2, 4)), capsule(logits), capsule(targets), capsule(torch.zeros(2, 3)),
                        capsule(torch.zeros(2, 4, dtype=torch.int64)), capsule(grad.double()))
    with pytest.raises(ValueError, match="logits"):
        _C.oal_forward(logits, *(capsule(t) for t in list(tensors.values())[1:]))


_VARIANT_CHECK = """
import torch, drift
from drift import reference
g = torch.Generator().manual_seed(0)
for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 5e-2), (torch.float16, 5e-2)):
    logits = (torch.randn(2, 5, 1031, generator=g) * 3).to(dtype)
    targets = torch.randint(0, 1031, (2, 7), generator=g)
    labels = torch.randint(0, 1031, (2, 5), generator=g)
    for fused, ref, args in ((drift.oal_loss, reference.oal_loss, (targets,)),
                             (drift.token_logps, reference.token_logps, (labels,))):
        x = logits.clone().requires_grad_(True)
        out = fused(x, *args)
        out.sum().backward()
        xr = logits.double().requires_grad_(True)
        want = ref(xr, *args)
        want.sum().backward()
        torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(x.grad.double(), xr.grad, atol=tol, rtol=tol)
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_narrower_cpu_variants_match_reference(isa):
    """The SIMD variants this CPU would not pick (DRIFT_CPU_ISA caps the choice per process)."""
    import subprocess
    import sys

    from conftest import drift_env

    env = drift_env(DRIFT_CPU_ISA=isa)
    done = subprocess.run([sys.executable, "-c", _VARIANT_CHECK], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
