"""drift.token_logps (fused selective log-softmax) against drift.reference.token_logps."""

from __future__ import annotations

import pytest
import torch

import drift
from drift import reference

# Tolerances per dtype (values, gradients). Low-precision logits are exact inputs to the fp32
# accumulation, so values stay tight; gradients are rounded to the logits' dtype.
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-4, 5e-2),
    torch.float16: (1e-4, 5e-2),
}


def make(batch, seq, vocab, dtype=torch.float32, masked=0.3, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * scale).to(dtype)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.rand(batch, seq, generator=g) >= masked
    return logits, labels, mask


def fused_and_reference(logits, labels, mask, seed=1):
    """drift's log-probs and gradient on the logits' device; the float64 reference always on the CPU."""
    g = torch.Generator().manual_seed(seed)
    # Drawn on the CPU (the same values for every device), moved next to each output.
    upstream = torch.randn(labels.shape, generator=g, dtype=torch.float64)
    x = logits.detach().clone().requires_grad_(True)
    out = drift.token_logps(x, labels, mask)
    (grad,) = torch.autograd.grad((out.double() * upstream.to(out.device)).sum(), x)
    xr = logits.detach().cpu().double().requires_grad_(True)
    ref = reference.token_logps(xr, labels.cpu(), None if mask is None else mask.cpu())
    (ref_grad,) = torch.autograd.grad((ref * upstream).sum(), xr)
    return out, grad, ref, ref_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(3, 7, 997), (1, 1, 5), (2, 5, 1), (2, 3, 4099)])
def test_matches_reference(dtype, shape):
    logits, labels, mask = make(*shape, dtype=dtype)
    out, grad, ref, ref_grad = fused_and_reference(logits, labels, mask)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert out.shape == labels.shape
    assert grad.dtype == dtype and grad.shape == logits.shape
    vtol, gtol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref, atol=vtol, rtol=vtol)
    torch.testing.assert_close(grad.double(), ref_grad, atol=gtol, rtol=gtol)
    # Masked positions: exactly 0 and no gradient.
    assert bool((out[~mask] == 0).all())
    assert bool((grad[~mask] == 0).all())


def test_default_mask_is_ignore_index():
    logits, labels, mask = make(2, 6, 50)
    labels = torch.where(mask, labels, torch.full_like(labels, -100))
    torch.testing.assert_close(drift.token_logps(logits, labels), drift.token_logps(logits, labels, mask))
    torch.testing.assert_close(drift.token_logps(logits, labels), reference.token_logps(logits, labels))


def test_fully_masked_rows_and_empty_batch():
    logits, labels, _ = make(2, 4, 33)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    x = logits.clone().requires_grad_(True)
    out = drift.token_logps(x, labels, mask)
    out.sum().backward()
    assert bool((out == 0).all()) and bool((x.grad == 0).all())
    empty = drift.token_logps(torch.randn(0, 3, 8), torch.zeros(0, 3, dtype=torch.int64))
    assert empty.shape == (0, 3)


def test_row_views_need_no_copy_and_strided_vocab():
    logits, labels, mask = make(2, 9, 130)
    view = logits[:, :-1]  # the causal-LM shift: rows strided, V contiguous
    out = drift.token_logps(view, labels[:, 1:], mask[:, 1:])
    torch.testing.assert_close(out, reference.token_logps(view, labels[:, 1:], mask[:, 1:]), atol=1e-5, rtol=1e-5)
    transposed = logits.transpose(1, 2).contiguous().transpose(1, 2)  # V not unit-stride
    torch.testing.assert_close(drift.token_logps(transposed, labels, mask), drift.token_logps(logits, labels, mask))


def test_extreme_logits_nan_and_masked_vocabulary():
    logits, labels, mask = make(2, 5, 64, scale=1.0)
    mask[:] = True
    big = logits * 1e4  # far outside exp's range: the online max must keep it stable
    torch.testing.assert_close(drift.token_logps(big, labels, mask), reference.token_logps(big, labels, mask),
                               atol=1e-3, rtol=1e-5)
    neg = logits.clone()
    neg[:, :, :32] = float("-inf")  # a vocabulary mask: -inf logits contribute exp(-inf) = 0
    labels_ok = labels % 32 + 32
    torch.testing.assert_close(drift.token_logps(neg, labels_ok, mask), reference.token_logps(neg, labels_ok, mask),
                               atol=1e-5, rtol=1e-5)
    nan = logits.clone()
    nan[0, 2, 7] = float("nan")
    x = nan.requires_grad_(True)
    out = drift.token_logps(x, labels, mask)
    assert bool(torch.isnan(out[0, 2])) and int(torch.isnan(out).sum()) == 1
    out.sum().backward()  # no crash; NaN stays in its row
    assert bool(torch.isfinite(x.grad[1]).all())


def test_thread_count_does_not_change_bits():
    logits, labels, mask = make(3, 8, 3001)
    before = drift.get_num_threads()
    try:
        drift.set_num_threads(1)
        one = drift.token_logps(logits, labels, mask)
        drift.set_num_threads(2)
        two = drift.token_logps(logits, labels, mask)
    finally:
        drift.set_num_threads(before)
    assert torch.equal(one, two)


def test_gradcheck_float64():
    logits, labels, mask = make(2, 3, 7, dtype=torch.float64)
    x = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: drift.token_logps(t, labels, mask), (x,))


def test_opcheck():
    logits, labels, mask = make(2, 3, 11)
    x = logits.clone().requires_grad_(True)
    torch.library.opcheck(torch.ops.drift.token_logps_forward.default, (x, labels, mask))
    logps, lse = torch.ops.drift.token_logps_forward(logits, labels, mask)
    torch.library.opcheck(torch.ops.drift.token_logps_backward.default,
                          (torch.ones_like(logps), logits, labels, mask, lse))


def test_autocast_region():
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 40)
    hidden = torch.randn(2, 5, 16)
    labels = torch.randint(0, 40, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(hidden)
        assert logits.dtype == torch.bfloat16
        out = drift.token_logps(logits, labels)
    out.sum().backward()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference.token_logps(logits.detach(), labels), atol=1e-4, rtol=1e-4)
    assert layer.weight.grad is not None and bool(torch.isfinite(layer.weight.grad).all())


@pytest.mark.parametrize(
    "args, error, name",
    [
        ((torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.int64)), ValueError, "logits"),
        ((torch.zeros(2, 3, 4, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64)), TypeError, "logits"),
        ((torch.randn(2, 3, 4), torch.zeros(2, 3)), TypeError, "labels"),
        ((torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.int64)), ValueError, "labels"),
        ((torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 3)), TypeError, "mask"),
        ((torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 2, dtype=torch.bool)),
         ValueError, "mask"),
        ((torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.int64, device="meta")), ValueError, "labels"),
        ((torch.randn(2, 3, 4), torch.full((2, 3), 4)), ValueError, "labels"),
        ((torch.randn(2, 3, 4), torch.full((2, 3), -1)), ValueError, "labels"),
        ((torch.randn(2, 3, 0), torch.zeros(2, 3, dtype=torch.int64)), ValueError, "logits"),
        (([[0.0]], torch.zeros(1, 1, dtype=torch.int64)), TypeError, "logits"),
    ],
)
def test_bad_inputs(args, error, name):
    with pytest.raises(error, match=name):
        drift.token_logps(*args)


@pytest.mark.cuda
@pytest.mark.skipif(not drift.cuda_available(), reason="needs a CUDA GPU and drift's CUDA kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_cpu(dtype):
    logits, labels, mask = make(3, 17, 4099, dtype=dtype)
    out_cpu, grad_cpu, _, _ = fused_and_reference(logits, labels, mask)
    out, grad, _, _ = fused_and_reference(logits.cuda(), labels.cuda(), mask.cuda())
    vtol, gtol = TOL[dtype]
    torch.testing.assert_close(out.cpu(), out_cpu, atol=vtol, rtol=vtol)
    torch.testing.assert_close(grad.cpu().double(), grad_cpu.double(), atol=gtol, rtol=gtol)


@pytest.mark.parametrize(
    "name, bad",
    [
        ("logits", torch.randn(2, 3, 4, dtype=torch.float64).to(torch.int64)),
        ("labels", torch.zeros(2, 3, dtype=torch.int32)),
        ("labels", torch.full((2, 3), 4, dtype=torch.int64)),
        ("mask", torch.ones(2, 3, dtype=torch.int64)),
        ("logps", torch.empty(2, 3, dtype=torch.float64)),
        ("lse", torch.empty(3, 2)),
    ],
)
def test_native_forward_validates_every_view(name, bad):
    from drift._native import _C, capsule

    tensors = dict(logits=torch.randn(2, 3, 4), labels=torch.zeros(2, 3, dtype=torch.int64),
                   mask=torch.ones(2, 3, dtype=torch.bool), logps=torch.empty(2, 3), lse=torch.empty(2, 3))
    tensors[name] = bad
    with pytest.raises(ValueError, match=name):
        _C.token_logps_forward_cpu(*(capsule(t) for t in tensors.values()))
