"""Tiny fixtures for fast tests and offline GPU checks: a random-init Llama with a real tokenizer
and a small summarization set.

The test suite (``tests/conftest.py``) and the GPU bundle (``scripts/gpu_bundle.py``) both build
them here, so the model the GPU machine trains is the one the CPU tests train.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]

#: The tiny model's shape: 2 layers, 32 wide, 4 heads (2 KV heads), tied embeddings.
TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)

_WORDS = "the cat dog sat ran on a mat in park rain sun city news team won lost game today said".split()


def write_tiny_llama(out: PathLike, tokenizer_dir: PathLike, seed: int = 0) -> Path:
    """Save a random-init Llama (:data:`TINY_LLAMA`, fp32) with the tokenizer of ``tokenizer_dir``
    (its chat template; pad == eos for SmolLM2) into ``out``; returns ``out``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **TINY_LLAMA)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_tiny_pairs(path: PathLike, rows: int = 24, seed: int = 0) -> Path:
    """Write a JSONL summarization set (``prompt``/``response`` columns) with a small repeated
    vocabulary, so that generated and ground-truth responses share tokens; returns ``path``."""
    rng = random.Random(seed)
    path = Path(path)
    with open(path, "w") as f:
        for _ in range(rows):
            doc = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 30)))
            summ = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8)))
            f.write(json.dumps({"prompt": doc, "response": summ}) + "\n")
    return path
