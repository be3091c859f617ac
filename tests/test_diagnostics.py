"""drift.diagnostics: hand-computed values on a fixed batch, and a deterministic end-to-end call."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import drift
from drift.diagnostics import (
    DIAGNOSTIC_KEYS,
    diagnostics_from_logps,
    mechanism_diagnostics,
    reference_token_logps,
    vocabulary_overlap,
)
from conftest import TRAIN_DEPS

# A fixed batch of three pairs. Masks are True on difference tokens (outside the LCS).
REFS = [[5, 6, 7, 2], [8, 8, 9], [4]]
GENS = [[5, 7, 3, 2], [], [4, 4, 4]]
MASKS = [[False, True, False, False], [True, True, True], [False]]
LOGPS = [[-1.0, -2.0, -3.0, -4.0], [-0.5, -1.5, -2.5], [-0.25]]


def test_fixed_batch_equals_hand_computation():
    out = diagnostics_from_logps(LOGPS, MASKS, REFS, GENS)
    assert tuple(out) == DIAGNOSTIC_KEYS
    # difference tokens: -2 (pair 0), -0.5, -1.5, -2.5 (pair 1) -> -6.5 / 4
    assert out["logp_difference"] == pytest.approx(-6.5 / 4)
    # LCS tokens: -1, -3, -4 (pair 0), -0.25 (pair 2) -> -8.25 / 4
    assert out["logp_lcs"] == pytest.approx(-8.25 / 4)
    assert out["logp_reference"] == pytest.approx(-14.75 / 8)
    assert (out["difference_tokens"], out["lcs_tokens"], out["pairs"], out["empty_generations"]) == (4, 4, 3, 1)
    # recall per pair: {5,6,7,2} vs {5,7,3,2} -> 3/4; {8,9} vs {} -> 0; {4} vs {4} -> 1
    assert out["vocab_recall"] == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    # precision: 3/4; undefined for the empty generation (left out); {4} of {4} -> 1
    assert out["vocab_precision"] == pytest.approx((0.75 + 1.0) / 2)
    # gamma: LCS share of y per pair: 3/4, 0/3, 1/1
    assert out["gamma"] == pytest.approx((0.75 + 0.0 + 1.0) / 3)


def test_masks_from_lcs_mask_and_gamma_match_the_trainers_definition():
    masks = drift.lcs_mask(REFS, GENS)
    assert [list(m) for m in masks.y] == MASKS
    out = diagnostics_from_logps(LOGPS, masks.y, REFS, GENS)
    gamma = sum(int(k) / len(y) for k, y in zip(masks.lcs_length, REFS)) / len(REFS)
    assert out["gamma"] == pytest.approx(gamma)


def test_ignore_ids_leave_the_vocabulary_sets_only():
    out = diagnostics_from_logps(LOGPS, MASKS, REFS, GENS, ignore_ids=[2])
    # pair 0 without id 2: {5,6,7} vs {5,7,3} -> recall 2/3, precision 2/3
    assert out["vocab_recall"] == pytest.approx((2 / 3 + 0.0 + 1.0) / 3)
    assert out["vocab_precision"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert out["logp_difference"] == pytest.approx(-6.5 / 4)  # log-probs unchanged


@pytest.mark.parametrize(
    "ref, gen, expected",
    [
        ([1, 2, 3], [3, 2, 1], (1.0, 1.0)),  # position-free
        ([1, 1, 1, 2], [1, 1], (0.5, 1.0)),  # duplicates count once
        ([1, 2], [1, 1, 1, 3, 3], (0.5, 0.5)),
        ([1, 2], [], (0.0, None)),  # empty generation
        ([], [1, 2], (None, 0.0)),  # empty reference
        ([], [], (None, None)),
        ([7, 8], [9], (0.0, 0.0)),  # disjoint
    ],
)
def test_vocabulary_overlap(ref, gen, expected):
    assert vocabulary_overlap(ref, gen) == expected


def test_undefined_means_are_none_and_inputs_of_any_kind():
    # every reference token in the LCS: no difference token -> None, not 0 or NaN
    out = diagnostics_from_logps([torch.tensor([-1.0, -2.0])], [np.array([False, False])], [np.array([3, 4])],
                                 [torch.tensor([3, 4])])
    assert out["logp_difference"] is None and out["logp_lcs"] == pytest.approx(-1.5)
    assert out["gamma"] == 1.0 and out["vocab_recall"] == 1.0
    # an empty reference and an empty generation: nothing is defined, counts still are
    out = diagnostics_from_logps([[]], [[]], [[]], [[]])
    assert [out[k] for k in ("logp_difference", "logp_lcs", "vocab_recall", "vocab_precision", "gamma")] == [None] * 5
    assert out["pairs"] == 1 and out["empty_generations"] == 1
    empty = diagnostics_from_logps([], [], [], [])
    assert empty["pairs"] == 0 and empty["logp_reference"] is None


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="generations"):
        diagnostics_from_logps(LOGPS, MASKS, REFS, GENS[:2])
    with pytest.raises(ValueError, match="pair 0"):
        diagnostics_from_logps([[-1.0]] + LOGPS[1:], MASKS, REFS, GENS)
    with pytest.raises(TypeError, match=r"difference_masks\[0\]"):
        diagnostics_from_logps(LOGPS, [[0, 1, 0, 0]] + MASKS[1:], REFS, GENS)
    with pytest.raises(TypeError, match=r"references\[0\]"):
        diagnostics_from_logps(LOGPS, MASKS, [[5.0, 6.0, 7.0, 2.0]] + REFS[1:], GENS)


class _Bigram(torch.nn.Module):
    """A toy causal LM whose logits at position t depend only on token t: log-probs by hand."""

    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=None):
        logits = self.table[input_ids]
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})()


def test_reference_token_logps_are_teacher_forced_and_batch_size_free():
    model = _Bigram()
    prompts = [[1, 2, 3], [4], [5, 6]]
    lp = reference_token_logps(model, prompts, REFS, batch_size=2)
    table = torch.log_softmax(model.table.detach(), -1)
    for x, y, got in zip(prompts, REFS, lp):
        context = [x[-1]] + y[:-1]
        want = torch.stack([table[c, t] for c, t in zip(context, y)])
        assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)
    again = reference_token_logps(model, prompts, REFS, batch_size=1)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(lp, again))
    assert model.training  # restored
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        reference_token_logps(model, [[1], []], [[2], [3]])


def test_mechanism_diagnostics_on_the_toy_model_equals_the_pure_function():
    model = _Bigram()
    prompts = [[1, 2, 3], [4], [5, 6]]
    out = mechanism_diagnostics(model, prompts, REFS, GENS, batch_size=3)
    table = torch.log_softmax(model.table.detach(), -1)
    logps = [[float(table[c, t]) for c, t in zip([x[-1]] + y[:-1], y)] for x, y in zip(prompts, REFS)]
    want = diagnostics_from_logps(logps, MASKS, REFS, GENS)
    for k in DIAGNOSTIC_KEYS:
        assert out[k] == pytest.approx(want[k], abs=1e-6), k
    assert out["seconds"] >= 0


@pytest.mark.skipif(not TRAIN_DEPS, reason="needs transformers")
def test_tiny_llama_end_to_end_is_deterministic(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    eos = tok.eos_token_id
    texts = [("the cat sat on the mat", "a cat sat", "the cat sat down"),
             ("rain in the city today", "city rain", "sun in park"),
             ("team won the game", "the team won", "")]
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [enc(p) for p, _, _ in texts]
    refs = [enc(y) + [eos] for _, y, _ in texts]
    gens = [enc(g) + [eos] if g else [] for _, _, g in texts]
    first = mechanism_diagnostics(model, prompts, refs, gens, ignore_ids=[eos], batch_size=2)
    second = mechanism_diagnostics(model, prompts, refs, gens, ignore_ids=[eos], batch_size=2)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    one_by_one = mechanism_diagnostics(model, prompts, refs, gens, ignore_ids=[eos], batch_size=1)
    assert one_by_one["logp_difference"] == pytest.approx(first["logp_difference"], abs=1e-4)
    assert first["pairs"] == 3 and first["empty_generations"] == 1
    assert first["difference_tokens"] + first["lcs_tokens"] == sum(map(len, refs))
    for k in ("logp_difference", "logp_lcs", "logp_reference"):
        assert first[k] < 0 and math.isfinite(first[k])
    assert 0 <= first["vocab_recall"] <= 1 and 0 <= first["vocab_precision"] <= 1 and 0 <= first["gamma"] <= 1
