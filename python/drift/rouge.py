"""ROUGE-1/2/L through ``rouge-score``, with a tokenizer that keeps CJK text.

rouge-score's default tokenizer lowercases, replaces every character outside ``[a-z0-9]`` by a
space and Porter-stems; Chinese, Japanese and Korean text therefore scores as empty.
:class:`CjkAwareTokenizer` splits CJK characters into one token each (ROUGE on characters, as
the LCSTS/CNewSum literature does) and hands everything else to the default tokenizer.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence

from rouge_score import rouge_scorer, tokenizers

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# CJK unified ideographs (+ extension A, compatibility), kana, hangul, CJK punctuation and
# full-width forms: each character is one token.
_CJK = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31ff"
    "\u3200-\u32ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
)
_CJK_PUNCT = re.compile("[\u3000-\u303f\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]")
_SPLIT = re.compile(f"([{_CJK}])")


class CjkAwareTokenizer(tokenizers.Tokenizer):
    """rouge-score tokenizer: one token per CJK character, the default tokenizer elsewhere.

    CJK punctuation is dropped (as the default tokenizer drops ASCII punctuation).
    """

    def __init__(self, use_stemmer: bool = True) -> None:
        self._default = tokenizers.DefaultTokenizer(use_stemmer=use_stemmer)

    def tokenize(self, text: str) -> List[str]:
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        out: List[str] = []
        for piece in _SPLIT.split(text):
            if not piece:
                continue
            if len(piece) == 1 and _SPLIT.fullmatch(piece):
                if not _CJK_PUNCT.match(piece):
                    out.append(piece)
            else:
                out.extend(self._default.tokenize(piece))
        return out


def make_scorer(use_stemmer: bool = True) -> rouge_scorer.RougeScorer:
    """A ``RougeScorer`` for ROUGE-1/2/L with Porter stemming and CJK character tokens."""
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=CjkAwareTokenizer(use_stemmer))


def rouge(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> Dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (in percent, 0..100) of ``predictions`` against ``references``.

    Args:
        predictions: generated texts; references: the ground truth, same length (>= 1).
        use_stemmer: Porter-stem English tokens (the usual setting).

    Returns:
        ``{"rouge1": ..., "rouge2": ..., "rougeL": ...}`` averaged over the pairs.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions, references: expected sequences of str, got a single str")
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"predictions: {len(predictions)} texts but references has {len(references)}")
    if not predictions:
        raise ValueError("predictions: expected at least one text")
    for name, texts in (("predictions", predictions), ("references", references)):
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{name}[{i}]: expected a str, got {type(t).__name__}")
    scorer = make_scorer(use_stemmer)
    totals = {k: 0.0 for k in ROUGE_TYPES}
    for p, r in zip(predictions, references):
        scores = scorer.score(r, p)
        for k in ROUGE_TYPES:
            totals[k] += scores[k].fmeasure
    return {k: 100.0 * v / len(predictions) for k, v in totals.items()}
