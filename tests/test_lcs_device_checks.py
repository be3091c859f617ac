"""The one-synchronisation input check of lcs_mask on a GPU batch (ops/lcs.py _any_invalid),
run here on CPU tensors: it must flag exactly what the per-argument checks reject."""

from __future__ import annotations

import pytest
import torch

from drift.ops.lcs import _any_invalid


def _batch():
    y = torch.tensor([[5, 6, 7, -1], [1, 2, 3, 4]])
    yp = torch.tensor([[5, 7, 0], [4, 3, -9]])
    return y, torch.tensor([3, 4]), yp, torch.tensor([3, 2])


def test_valid_batch_passes():
    assert not _any_invalid(*_batch())  # negatives only beyond the lengths


@pytest.mark.parametrize(
    "edit",
    [
        lambda y, yl, yp, ypl: (y, torch.tensor([5, 4]), yp, ypl),  # y length > width
        lambda y, yl, yp, ypl: (y, yl, yp, torch.tensor([3, -1])),  # negative length
        lambda y, yl, yp, ypl: (y, torch.tensor([4, 4]), yp, ypl),  # y[0, 3] = -1 now inside
        lambda y, yl, yp, ypl: (y, yl, yp, torch.tensor([3, 3])),  # y'[1, 2] = -9 now inside
    ],
)
def test_each_invalid_input_is_flagged(edit):
    assert _any_invalid(*edit(*_batch()))


def test_empty_batches():
    e = torch.zeros((0, 3), dtype=torch.int64)
    assert not _any_invalid(e, torch.zeros(0, dtype=torch.int64), e, torch.zeros(0, dtype=torch.int64))
    w = torch.zeros((2, 0), dtype=torch.int64)
    assert not _any_invalid(w, torch.zeros(2, dtype=torch.int64), w, torch.zeros(2, dtype=torch.int64))
    assert _any_invalid(w, torch.ones(2, dtype=torch.int64), w, torch.zeros(2, dtype=torch.int64))
