"""drift.token_logps (fused selective log-softmax) against drift.reference.token_logps: the checks of
its own (the checks it shares with drift.oal_loss are in test_vocab_ops.py)."""

from __future__ import annotations

import pytest
import torch

import drift
from drift import reference
from _vocab_helpers import make_token as make


def test_default_mask_is_ignore_index():
    logits, labels, mask = make(2, 6, 50)
    labels = torch.where(mask, labels, torch.full_like(labels, -100))
    torch.testing.assert_close(drift.token_logps(logits, labels), drift.token_logps(logits, labels, mask))
    torch.testing.assert_close(drift.token_logps(logits, labels), reference.token_logps(logits, labels))


def test_uint8_156_is_an_id_and_int8_minus_100_the_ignore_index():
    # 156 is -100 wrapped to uint8; as an id it is scored like the int64 id 156.
    logits = make(1, 3, 200)[0]
    want = reference.token_logps(logits.double(), torch.full((1, 3), 156))
    assert bool((want < 0).all())
    for labels in (torch.full((1, 3), 156, dtype=torch.uint8), torch.full((1, 3), 156, dtype=torch.int16)):
        torch.testing.assert_close(drift.token_logps(logits, labels).double(), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reference.token_logps(logits.double(), labels), want, atol=0, rtol=0)
    labels = torch.tensor([[-100, 127, -100]], dtype=torch.int8)
    out = drift.token_logps(logits, labels)
    assert out[0, 0].item() == 0 and out[0, 2].item() == 0 and out[0, 1].item() < 0


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
