"""The fused ops' two roads to the same kernels (drift/ops/_fused.py): eager calls go through one
autograd.Function, traced or intercepted calls through the torch.library custom ops. Both must
give identical values and gradients, and each must be taken when it should."""

from __future__ import annotations

import pytest
import torch

import drift
from drift.ops import _fused


def _cases():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 37, generator=g, dtype=torch.float64)
    targets = torch.tensor([[1, 4, 4, 36], [0, 2, -100, 9]])
    labels = torch.randint(0, 37, (2, 5), generator=g)
    return [
        ("oal", logits, lambda x: drift.oal_loss(x, targets, reduction="none")),
        ("token_logps", logits, lambda x: drift.token_logps(x, labels)),
    ]


def _value_and_grad(fn, logits):
    leaf = logits.clone().requires_grad_(True)
    out = fn(leaf)
    upstream = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    (grad,) = torch.autograd.grad((out * upstream).sum(), leaf)
    return out.detach(), grad, out


@pytest.mark.parametrize("name,logits,fn", _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_eager_and_custom_op_roads_agree(name, logits, fn, monkeypatch):
    eager_out, eager_grad, eager_graph = _value_and_grad(fn, logits)
    monkeypatch.setattr(_fused, "_plain_eager", lambda inputs: False)
    op_out, op_grad, op_graph = _value_and_grad(fn, logits)
    assert torch.equal(eager_out, op_out)
    assert torch.equal(eager_grad, op_grad)
    names = [type(n).__name__ for n, _ in _walk(eager_graph.grad_fn)]
    assert any("_Eager" in n for n in names), names
    names = [type(n).__name__ for n, _ in _walk(op_graph.grad_fn)]
    assert not any("_Eager" in n for n in names), names


def _walk(node, seen=None):
    seen = set() if seen is None else seen
    if node is None or node in seen:
        return []
    seen.add(node)
    out = [(node, None)]
    for nxt, _ in node.next_functions:
        out += _walk(nxt, seen)
    return out


def test_tracing_takes_the_custom_op_road():
    logits = torch.randn(1, 3, 11)
    targets = torch.tensor([[2, 5]])
    seen = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Spy():
        drift.oal_loss(logits, targets)
    assert any("drift.oal_forward" in s for s in seen), seen


@pytest.mark.parametrize("name,logits,fn", _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_both_roads_agree_on_double_backward(name, logits, fn, monkeypatch):
    def second_order():
        leaf = logits.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((fn(leaf) ** 2).sum(), leaf, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * torch.cos(logits)).sum(), leaf)
        return grad.detach(), hvp

    eager = second_order()
    monkeypatch.setattr(_fused, "_plain_eager", lambda inputs: False)
    custom = second_order()
    assert torch.equal(eager[0], custom[0])
    assert torch.allclose(eager[1], custom[1], rtol=1e-12, atol=1e-12)
    assert eager[1].abs().sum() > 0
