"""The checks drift.oal_loss and drift.token_logps share, driven by one table of (op, reference,
inputs) (tests/_vocab_helpers.py OPS): values and gradients against the float64 references for
every dtype, bits independent of the thread count, gradcheck, opcheck, autocast, CUDA against
CPU and the native layer's view checks. Op-specific behaviour is in test_oal.py and
test_token_logps.py."""

from __future__ import annotations

import pytest
import torch

import drift
from _vocab_helpers import OPS, TOL, fused_and_reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
CASES = [(op, shape) for op in OPS for shape in op.shapes]


def _run(op, logits, args, kwargs):
    return fused_and_reference(op.fused, op.reference, logits, args, kwargs, op.upstream)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, shape", CASES, ids=[f"{op}-{shape}" for op, shape in CASES])
def test_matches_reference(op, shape, dtype):
    logits, args, kwargs, valid = op.inputs(shape, dtype)
    out, grad, ref, ref_grad = _run(op, logits, args, kwargs)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert grad.dtype == dtype and grad.shape == logits.shape
    vtol, gtol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref, atol=vtol, rtol=vtol)
    torch.testing.assert_close(grad.double(), ref_grad, atol=gtol, rtol=gtol)
    op.check(out, grad, args, kwargs, valid, shape)


ID_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


def _edge_ids(dtype, shape, vocab):
    """int64 ids that ``dtype`` holds exactly: -100 where it can (the ignore index), 156 (-100
    wrapped to uint8: an id), 0, 255 and the largest id below ``vocab``; random ids elsewhere."""
    lo, hi = torch.iinfo(dtype).min, torch.iinfo(dtype).max
    top = min(hi, vocab - 1)
    edges = [v for v in (-100, 156, 0, 255, top) if lo <= v <= hi and v < vocab]
    ids = torch.randint(0, top + 1, shape, generator=torch.Generator().manual_seed(5))
    ids.view(-1)[: len(edges)] = torch.tensor(edges)
    return ids


@pytest.mark.parametrize("id_dtype", ID_DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_default_mask_reads_ids_of_every_dtype_as_numbers(op, id_dtype):
    # The default mask drops the number -100 and nothing else: never an id that equals -100
    # once -100 is cast to a narrow dtype (uint8 156), whatever the ids' dtype.
    vocab = 2**15  # holds int16's largest id
    logits, args, kwargs, _ = op.inputs((2, 5, vocab, 6)[: len(op.shapes[0])])
    numbers = _edge_ids(id_dtype, tuple(args[0].shape), vocab)
    ids = numbers.to(id_dtype)
    assert torch.equal(ids.to(torch.int64), numbers)
    keep = numbers != -100  # compared as int64: the ignore index only where the id is -100
    assert bool((numbers == (156 if id_dtype == torch.uint8 else -100)).any())
    out, grad, ref, ref_grad = _run(op, logits, *op.with_ids(args, kwargs, ids))
    out64, grad64, ref64, ref_grad64 = _run(op, logits, *op.with_ids(args, kwargs, numbers, keep))
    assert torch.equal(out, out64) and torch.equal(grad, grad64)
    torch.testing.assert_close(ref, ref64, atol=0, rtol=0)  # the reference reads them as numbers too
    vtol, gtol = TOL[torch.float32]
    torch.testing.assert_close(out.double(), ref64, atol=vtol, rtol=vtol)
    torch.testing.assert_close(grad.double(), ref_grad64, atol=gtol, rtol=gtol)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_thread_count_does_not_change_bits(op):
    logits, args, kwargs, _ = op.inputs((3, 8, 3001, 10)[: len(op.shapes[0])])
    before = drift.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            drift.set_num_threads(n)
            x = logits.clone().requires_grad_(True)
            out = op.fused(x, *args, **kwargs)
            out.sum().backward()
            results.append((out.detach(), x.grad))
    finally:
        drift.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("op", OPS, ids=str)
def test_gradcheck_float64(op):
    logits, args, kwargs, _ = op.inputs((2, 4, 7, 4)[: len(op.shapes[0])], dtype=torch.float64)
    x = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: op.fused(t, *args, **kwargs), (x,))


@pytest.mark.parametrize("op", OPS, ids=str)
def test_opcheck(op):
    logits, args, kwargs, _ = op.inputs((2, 4, 13, 5)[: len(op.shapes[0])])
    inputs = (logits, *op.op_inputs(args, kwargs))
    forward = getattr(torch.ops.drift, f"{op.name}_forward")
    backward = getattr(torch.ops.drift, f"{op.name}_backward")
    torch.library.opcheck(forward.default, (logits.clone().requires_grad_(True), *inputs[1:]))
    outputs = forward(*inputs)
    torch.library.opcheck(backward.default, (torch.ones_like(outputs[0]), *op.saved(inputs, outputs)))


@pytest.mark.parametrize("op", OPS, ids=str)
def test_autocast_region(op):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 40)
    hidden = torch.randn(2, 5, 16)
    ids = torch.randint(0, 40, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(hidden)
        assert logits.dtype == torch.bfloat16
        out = op.fused(logits, ids)
    out.sum().backward()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, op.reference(logits.detach(), ids), atol=1e-4, rtol=1e-4)
    assert layer.weight.grad is not None and bool(torch.isfinite(layer.weight.grad).all())


@pytest.mark.cuda
@pytest.mark.skipif(not drift.cuda_available(), reason="needs a CUDA GPU and drift's CUDA kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_cuda_matches_cpu(op, dtype):
    logits, args, kwargs, _ = op.inputs((3, 17, 4099, 40)[: len(op.shapes[0])], dtype=dtype)
    out_cpu, grad_cpu, _, _ = _run(op, logits, args, kwargs)
    cuda = lambda t: t.cuda() if isinstance(t, torch.Tensor) else t  # noqa: E731
    out, grad, _, _ = _run(op, logits.cuda(), tuple(cuda(a) for a in args), {k: cuda(v) for k, v in kwargs.items()})
    vtol, gtol = TOL[dtype]
    torch.testing.assert_close(out.cpu(), out_cpu, atol=vtol, rtol=vtol)
    torch.testing.assert_close(grad.cpu().double(), grad_cpu.double(), atol=gtol, rtol=gtol)
    bad_args, bad_kwargs = op.bad_ids(args, kwargs, logits.shape[2])
    with pytest.raises(ValueError, match="targets" if op.name == "oal" else "labels"):
        op.fused(logits.cuda(), *(cuda(a) for a in bad_args), **bad_kwargs)


# (op, view, bad value) for the native forward entry drift._C.<op>_forward on (2, 3, V) logits.
NATIVE_BAD_VIEWS = [
    ("oal", "logits", torch.randn(2, 3)),
    ("oal", "targets", torch.zeros(2, 4, dtype=torch.int32)),
    ("oal", "targets", torch.full((2, 4), 7, dtype=torch.int64)),
    ("oal", "logits_mask", torch.ones(2, 4, dtype=torch.bool)),
    ("oal", "targets_mask", torch.ones(3, 4, dtype=torch.bool)),
    ("oal", "target_logps", torch.empty(2, 4, dtype=torch.float64)),
    ("oal", "lse", torch.empty(2, 3)[:, :2]),
    ("oal", "argmax", torch.empty(2, 4, 1, dtype=torch.int64)),
    ("token_logps", "logits", torch.randn(2, 3, 4, dtype=torch.float64).to(torch.int64)),
    ("token_logps", "labels", torch.zeros(2, 3, dtype=torch.int32)),
    ("token_logps", "labels", torch.full((2, 3), 4, dtype=torch.int64)),
    ("token_logps", "mask", torch.ones(2, 3, dtype=torch.int64)),
    ("token_logps", "logps", torch.empty(2, 3, dtype=torch.float64)),
    ("token_logps", "lse", torch.empty(3, 2)),
]


@pytest.mark.parametrize("op_name, name, bad", NATIVE_BAD_VIEWS, ids=[f"{o}-{n}-{i}" for i, (o, n, _) in enumerate(NATIVE_BAD_VIEWS)])
def test_native_forward_validates_every_view(op_name, name, bad):
    from drift._native import _C, capsule

    op = next(o for o in OPS if o.name == op_name)
    views = op.native_views(5 if op_name == "oal" else 4)
    views[name] = bad
    with pytest.raises(ValueError, match=name):
        getattr(_C, f"{op_name}_forward")(*(capsule(t) for t in views.values()))
