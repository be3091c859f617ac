"""drift.spin_loss / dam_loss / drift_loss / DriftLoss against drift.reference."""

from __future__ import annotations

import math

import pytest
import torch

import drift
from drift import reference


def sequence_logps(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(-10 * torch.rand(batch, generator=g, dtype=torch.float64)) for _ in range(4)]


def test_spin_loss_matches_reference_and_detaches_rewards():
    pc, pr, rc, rr = sequence_logps()
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    out = drift.spin_loss(pc, pr, rc, rr, beta=0.3)
    assert isinstance(out, drift.SelfPlayLoss)
    ref = reference.spin_loss(pc, pr, rc, rr, beta=0.3)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want)
    assert not out.chosen_rewards.requires_grad and not out.margins.requires_grad
    torch.testing.assert_close(out.margins, out.chosen_rewards - out.rejected_rewards)
    torch.testing.assert_close(out.chosen_rewards, 0.3 * (pc - rc).detach())
    # d loss / d pc = -beta * sigmoid(-z) / B
    out.loss.backward()
    z = 0.3 * ((pc - rc) - (pr - rr)).detach()
    torch.testing.assert_close(pc.grad, -0.3 * torch.sigmoid(-z) / 4)
    torch.testing.assert_close(pr.grad, 0.3 * torch.sigmoid(-z) / 4)


def test_spin_loss_is_stable_for_large_margins():
    big = torch.tensor([1e4, -1e4], dtype=torch.float32)
    zero = torch.zeros(2)
    out = drift.spin_loss(big, zero, zero, zero, beta=1.0)
    assert math.isfinite(out.loss.item())
    torch.testing.assert_close(out.loss, torch.tensor(1e4 / 2))


def test_dam_loss_masked_sums_and_identical_pair():
    g = torch.Generator().manual_seed(1)
    chosen = -torch.rand(3, 5, generator=g, dtype=torch.float64)
    rejected = -torch.rand(3, 6, generator=g, dtype=torch.float64)
    cmask = torch.rand(3, 5, generator=g) > 0.4
    rmask = torch.rand(3, 6, generator=g) > 0.4
    cmask[2] = False
    rmask[2] = False  # y == y': both masks empty -> margin 0, log 2, no gradient
    rc, rr = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    rc[2] = rr[2] = 0
    chosen.requires_grad_(True)
    out = drift.dam_loss(chosen, rejected, rc, rr, cmask, rmask, beta=0.5)
    ref = reference.dam_loss(chosen, rejected, rc, rr, cmask, rmask, beta=0.5)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want)
    assert out.margins[2].item() == 0
    per_pair = torch.nn.functional.softplus(-out.margins)
    torch.testing.assert_close(per_pair[2], torch.tensor(math.log(2), dtype=torch.float64))
    out.loss.backward()
    assert bool((chosen.grad[2] == 0).all()) and bool((chosen.grad[~cmask] == 0).all())


def make_pair(batch=2, tc=6, tr=7, vocab=53, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    chosen_logits = torch.randn(batch, tc, vocab, generator=g, dtype=torch.float64).to(dtype)
    rejected_logits = torch.randn(batch, tr, vocab, generator=g, dtype=torch.float64).to(dtype)
    chosen_labels = torch.randint(0, vocab, (batch, tc), generator=g)
    rejected_labels = torch.randint(0, vocab, (batch, tr), generator=g)
    chosen_mask = torch.rand(batch, tc, generator=g) > 0.3
    rejected_mask = torch.rand(batch, tr, generator=g) > 0.3
    response_mask = torch.ones(batch, tr, dtype=torch.bool)
    response_mask[:, :1] = False
    ref_c = -5 * torch.rand(batch, generator=g, dtype=torch.float64)
    ref_r = -5 * torch.rand(batch, generator=g, dtype=torch.float64)
    return (chosen_logits, chosen_labels, chosen_mask, rejected_logits, rejected_labels, rejected_mask, ref_c,
            ref_r), response_mask


@pytest.mark.parametrize("oal_weight", [0.0, 0.7])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_drift_loss_matches_reference(oal_weight, dtype, tol):
    args, response_mask = make_pair(dtype=dtype)
    targets = torch.randint(0, 53, (2, 5), generator=torch.Generator().manual_seed(3))
    kw = dict(oal_targets=targets, rejected_response_mask=response_mask, beta=0.2, oal_weight=oal_weight)
    leaves = [args[0].clone().requires_grad_(True), args[3].clone().requires_grad_(True)]
    fused_args = (leaves[0], *args[1:3], leaves[1], *args[4:])
    out = drift.drift_loss(*fused_args, **kw)
    assert isinstance(out, drift.DriftLossOutput)
    ref_leaves = [args[0].double().requires_grad_(True), args[3].double().requires_grad_(True)]
    ref_args = (ref_leaves[0], *args[1:3], ref_leaves[1], *args[4:])
    ref = reference.drift_loss(*ref_args, **kw)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got.double(), want.double(), atol=tol, rtol=tol)
    if oal_weight == 0:
        assert out.oal_loss.item() == 0 and out.oal_loss.dim() == 0
        torch.testing.assert_close(out.loss, out.self_play_loss)
    out.loss.backward()
    ref[0].backward()
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=tol, rtol=tol)


def test_drift_loss_defaults_and_module():
    args, _ = make_pair(dtype=torch.float32)
    out = drift.drift_loss(*args)  # oal targets: chosen_labels; OAL positions: rejected_mask
    ref = reference.drift_loss(*args)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    module = drift.DriftLoss(beta=0.1, oal_weight=1.0)
    for got, want in zip(module(*args), out):
        torch.testing.assert_close(got, want)
    assert "beta=0.1" in repr(module)


def test_drift_loss_reads_uint8_oal_target_156_as_an_id():
    # 156 is -100 wrapped to uint8: the OAL counts it as the int64 id 156 (vocabulary 200).
    args, response_mask = make_pair(vocab=200, dtype=torch.float32)
    numbers = torch.tensor([[156, 7, 156], [156, 156, 0]])
    kw = dict(rejected_response_mask=response_mask)
    want = drift.drift_loss(*args, oal_targets=numbers, **kw)
    ref = reference.drift_loss(*args, oal_targets=numbers.to(torch.uint8), **kw)  # (loss, sp, oal, ...)
    torch.testing.assert_close(want.oal_loss.double(), ref[2].double(), atol=1e-5, rtol=1e-5)
    without_156 = drift.drift_loss(*args, oal_targets=numbers, oal_targets_mask=numbers != 156, **kw)
    assert abs(want.oal_loss.item() - without_156.oal_loss.item()) > 1e-3
    got = drift.drift_loss(*args, oal_targets=numbers.to(torch.uint8), **kw)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_spin_is_dam_with_full_masks():
    args, _ = make_pair(dtype=torch.float32)
    full = (args[0], args[1], torch.ones_like(args[2]), args[3], args[4], torch.ones_like(args[5]), args[6], args[7])
    out = drift.drift_loss(*full, oal_weight=0.0)
    pc = drift.reference.token_logps(args[0], args[1], torch.ones_like(args[2])).sum(-1)
    pr = drift.reference.token_logps(args[3], args[4], torch.ones_like(args[5])).sum(-1)
    torch.testing.assert_close(out.loss, drift.spin_loss(pc, pr, args[6], args[7]).loss,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda a: drift.spin_loss(*a, beta=0.0), ValueError, "beta"),
        (lambda a: drift.spin_loss(*a, beta="x"), TypeError, "beta"),
        (lambda a: drift.spin_loss(a[0][:2], *a[1:]), ValueError, "policy_rejected_logps"),
        (lambda a: drift.spin_loss(a[0].long(), *a[1:]), TypeError, "policy_chosen_logps"),
        (lambda a: drift.spin_loss(a[0][None], *a[1:]), ValueError, "policy_chosen_logps"),
        (lambda a: drift.spin_loss(a[0], a[1], a[2].to("meta"), a[3]), ValueError, "reference_chosen_logps"),
        (lambda a: drift.spin_loss(a[0], a[1], [0.0] * 4, a[3]), TypeError, "reference_chosen_logps"),
    ],
)
def test_spin_bad_inputs(call, error, name):
    with pytest.raises(error, match=name):
        call(sequence_logps())


def test_dam_and_drift_bad_inputs():
    args, _ = make_pair(dtype=torch.float32)
    tok = torch.zeros(2, 6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    ref = torch.zeros(2)
    with pytest.raises(TypeError, match="chosen_mask"):
        drift.dam_loss(tok, tok, ref, ref, mask.float(), mask)
    with pytest.raises(ValueError, match="rejected_mask"):
        drift.dam_loss(tok, tok, ref, ref, mask, mask[:, :3])
    with pytest.raises(ValueError, match="policy_rejected_token_logps"):
        drift.dam_loss(tok, tok[:1], ref, ref, mask, mask[:1])
    with pytest.raises(ValueError, match="oal_weight"):
        drift.drift_loss(*args, oal_weight=-1.0)
    with pytest.raises(ValueError, match="rejected_logits"):
        drift.drift_loss(*args[:3], args[3][:1], args[4][:1], args[5][:1], *args[6:])
    with pytest.raises(ValueError, match="oal_weight"):
        drift.DriftLoss(oal_weight=-2)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, "x", True])
def test_drift_loss_and_module_reject_oal_weight_alike(value):
    """One validator: the function and the module raise the same error, naming oal_weight."""
    args, _ = make_pair(dtype=torch.float32)
    with pytest.raises((TypeError, ValueError), match="^oal_weight: ") as from_function:
        drift.drift_loss(*args, oal_weight=value)
    with pytest.raises(type(from_function.value), match="^oal_weight: ") as from_module:
        drift.DriftLoss(oal_weight=value)
    assert str(from_module.value) == str(from_function.value)


def test_module_forward_takes_drift_loss_arguments_but_its_own():
    import inspect

    args, _ = make_pair(dtype=torch.float32)
    module = drift.DriftLoss(beta=0.1, oal_weight=0.5)
    want = drift.drift_loss(*args[:6], reference_chosen_logps=args[6], reference_rejected_logps=args[7], oal_weight=0.5)
    got = module(*args[:6], reference_chosen_logps=args[6], reference_rejected_logps=args[7])
    torch.testing.assert_close(got.loss, want.loss)
    with pytest.raises(TypeError, match="^beta: set on the module"):
        module(*args, beta=0.2)
    params = list(inspect.signature(module.forward).parameters)
    assert params[0] == "chosen_logits" and "beta" not in params and "oal_targets" in params
