"""drift.rouge: rouge-score with stemming, CJK text scored on characters."""

from __future__ import annotations

from collections import Counter

import pytest

rouge_score = pytest.importorskip("rouge_score")

from drift.rouge import CjkAwareTokenizer, rouge  # noqa: E402


def _f1_unigram(pred, ref):
    """ROUGE-1 F1 from token multisets, by hand."""
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    p, r = overlap / len(pred), overlap / len(ref)
    return 100 * 2 * p * r / (p + r)


def _lcs_len(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            t[i][j] = t[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(t[i - 1][j], t[i][j - 1])
    return t[-1][-1]


@pytest.mark.parametrize(
    "pred,ref",
    [
        ("我爱北京天安门", "我爱上海"),
        ("今天天气很好，我们去公园。", "今天天气不好，我们在家。"),
        ("北京", "东京"),
        ("完全不同", "毫无关系"),
    ],
)
def test_chinese_scores_like_character_overlap(pred, ref):
    punct = set("，。")
    pc, rc = [c for c in pred if c not in punct], [c for c in ref if c not in punct]
    got = rouge([pred], [ref])
    assert got["rouge1"] == pytest.approx(_f1_unigram(pc, rc))
    k = _lcs_len(pc, rc)
    want_l = 0.0 if k == 0 else 100 * 2 * (k / len(pc)) * (k / len(rc)) / (k / len(pc) + k / len(rc))
    assert got["rougeL"] == pytest.approx(want_l)
    if set(pc) & set(rc):
        assert got["rouge1"] > 0  # the default rouge-score tokenizer would give 0 here


def test_default_tokenizer_drops_chinese_ours_does_not():
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    assert default.score("我爱北京", "我爱北京")["rouge1"].fmeasure == 0.0
    assert rouge(["我爱北京"], ["我爱北京"])["rouge1"] == pytest.approx(100.0)


def test_english_matches_rouge_score_with_stemming():
    from rouge_score import rouge_scorer

    preds = ["The cats were running in the parks today.", "A quick brown fox", "nothing"]
    refs = ["A cat runs in the park.", "The quick brown fox jumps", "something else"]
    ref_scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    want = {k: 0.0 for k in ("rouge1", "rouge2", "rougeL")}
    for p, r in zip(preds, refs):
        s = ref_scorer.score(r, p)
        for k in want:
            want[k] += 100 * s[k].fmeasure / len(preds)
    got = rouge(preds, refs)
    for k in want:
        assert got[k] == pytest.approx(want[k])
    assert got["rouge1"] > 0  # "cats"/"cat", "running"/"runs", "parks"/"park" match after stemming


def test_mixed_text_tokens():
    assert CjkAwareTokenizer().tokenize("GPT-4 在 2024 年发布，Running!") == ["gpt", "4", "在", "2024", "年", "发", "布", "run"]


def test_bad_input():
    with pytest.raises(ValueError, match="predictions"):
        rouge(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="predictions"):
        rouge([], [])
    with pytest.raises(TypeError, match="references\\[0\\]"):
        rouge(["a"], [None])
    with pytest.raises(TypeError, match="single str"):
        rouge("abc", "abc")
