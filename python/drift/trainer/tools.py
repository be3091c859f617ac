"""``drift generate`` and ``drift eval``: one model, the config's data, no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from drift import assets, data
from drift.rouge import rouge
from drift.trainer import io
from drift.trainer.config import DriftConfig
from drift.trainer.loop import Policy, Run, encode, generate, load_tokenizer, make_accelerator


def _setup(config: DriftConfig, model: Optional[str], split: str):
    spec = data.resolve(config.data, config.eval_data, config.prompt_column, config.response_column, config.instruction)
    train_rows, eval_rows = data.load_splits(spec, config.num_train_examples, config.num_eval_examples, config.data_seed)
    rows = train_rows if split == "train" else eval_rows
    path = model or config.model_name_or_path or str(assets.smollm2_model_dir())
    if not Path(path).exists() and model is not None:
        raise FileNotFoundError(f"--model: no such directory {path}")
    acc = make_accelerator()
    tok = load_tokenizer(path)
    pairs = [encode(tok, r, config, spec.instruction) for r in rows]
    run = Run(config, acc, tok, Policy(path, config, acc.device), io.MetricsLog(Path("/dev/null"), False))
    return run, rows, pairs


def generate_file(config: DriftConfig, model: Optional[str], output: str, split: str = "eval") -> int:
    """Generate for the ``split`` prompts and write JSONL records (prompt, reference, generation)."""
    run, rows, pairs = _setup(config, model, split)
    ids = generate(run, run.policy.get(), [p.prompt_ids for p in pairs], sample=config.do_sample, seed=config.seed,
                   desc="generate")
    if run.accelerator.is_main_process:
        with io.atomic_path(Path(output)) as tmp:
            with open(tmp, "w") as f:
                for r, g in zip(rows, ids):
                    text = run.tokenizer.decode(g, skip_special_tokens=True).strip()
                    f.write(json.dumps({"prompt": r.prompt, "reference": r.response, "generation": text}) + "\n")
    return len(rows)


def evaluate_model(config: DriftConfig, model: Optional[str]) -> Dict[str, float]:
    """Greedy ROUGE-1/2/L (percent) of ``model`` on the config's held-out examples."""
    run, rows, pairs = _setup(config, model, "eval")
    ids = generate(run, run.policy.get(), [p.prompt_ids for p in pairs], sample=False, seed=0, desc="eval")
    preds = [run.tokenizer.decode(g, skip_special_tokens=True).strip() for g in ids]
    return rouge(preds, [r.response for r in rows])
