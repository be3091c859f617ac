"""``drift generate`` and ``drift eval``: one model, a run's (or the config's) data, no training.

Given a run folder or a model folder inside a run, both read the run's ``config.json``, so a
model is scored on the data and held-out split it was trained against, and say which data and
split they use. ``generate`` also takes a prompts-only file (``--prompts``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from drift import assets, atomic, data
from drift.rouge import rouge
from drift.trainer.config import DriftConfig
from drift.trainer.examples import encode, split_ids
from drift.trainer.generation import answer_record, generate
from drift.trainer.layout import CONFIG_FILE, METRICS_FILE, TRAIN_INFO_FILE, RunLayout, StageFiles
from drift.trainer.run import open_run


def _is_run(d: Path) -> bool:
    return (d / CONFIG_FILE).is_file() and (d / METRICS_FILE).is_file()


def _has_model(d: Path) -> bool:
    return (d / TRAIN_INFO_FILE).is_file() or (d / "config.json").is_file() or (d / "adapter_config.json").is_file()


def find_run(model: Optional[str]) -> Tuple[Optional[Path], Optional[str]]:
    """``(run folder or None, model folder)`` for ``--model``: a run folder means its latest trained stage.

    Raises FileNotFoundError naming ``--model`` when the folder is missing or a run has no trained model.
    """
    if model is None:
        return None, None
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--model: no such folder {model}")
    if _is_run(path):
        models = [d.model for d in map(StageFiles, RunLayout(path).stages()) if _has_model(d.model)]
        if not models:
            raise FileNotFoundError(f"--model: the run in {model} has no trained model yet (no iter_<k>/model)")
        return path, str(models[-1])
    for parent in list(path.resolve().parents)[:3]:
        if _is_run(parent):
            return parent, str(path)
    return None, str(path)


def run_settings(run_dir: Optional[Path]) -> Dict[str, Any]:
    """The run's stored settings (its config.json), minus the fields that are about training output."""
    if run_dir is None:
        return {}
    values = atomic.read_json(RunLayout(run_dir).config_json)
    known = set(DriftConfig.field_names())
    return {k: v for k, v in values.items() if k in known and k != "output_dir"}


def _setup(config: DriftConfig, model: Optional[str], rows: List[data.Row], instruction: Optional[str],
           command: str, what: str):
    path = model or config.model_name_or_path or str(assets.smollm2_model_dir())
    run = open_run(config, path)
    pairs = [encode(run.tokenizer, r, config, instruction) for r in rows]
    if run.accelerator.is_main_process:
        print(f"drift {command}: model {path}; {what}", file=sys.stderr)
    return run, pairs


def _split_rows(config: DriftConfig, split: str):
    spec = data.resolve(config.data, config.eval_data, config.prompt_column, config.response_column, config.instruction)
    train_rows, eval_rows = data.load_splits(spec, config.num_train_examples, config.num_eval_examples, config.data_seed,
                                             ids=split_ids(config))
    rows = train_rows if split == "train" else eval_rows
    source = spec.eval_path if (split == "eval" and spec.eval_path is not None) else spec.path
    what = (f"data {source} ({config.data if config.data in assets.DEMO_DATASETS else 'file'}), "
            f"{'training' if split == 'train' else 'held-out'} split: {len(rows)} examples "
            f"({'split_file ' + config.split_file if config.split_file else f'data_seed {config.data_seed}'})")
    return rows, spec.instruction, what


def generate_file(config: DriftConfig, model: Optional[str], output: str, split: str = "eval",
                  prompts: Optional[str] = None) -> int:
    """Generate for the ``split`` prompts (or every prompt of a ``prompts`` file) and write JSONL records.

    Records: ``prompt``, ``generation``, ``ended``, ``generation_ids`` (generation.answer_record)
    and ``reference`` (omitted for a prompts-only file).
    """
    if prompts is not None:
        path = Path(prompts).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--prompts: no such file {prompts}")
        texts = data.read_prompts(path, config.prompt_column or "prompt", "--prompts")
        rows = [data.Row(t, "") for t in texts]
        instruction, what = config.instruction, f"prompts {path}: {len(rows)} prompts"
    else:
        rows, instruction, what = _split_rows(config, split)
    run, pairs = _setup(config, model, rows, instruction, "generate", what)
    ids = generate(run, run.policy.get(), [p.prompt_ids for p in pairs], sample=config.do_sample, seed=config.seed,
                   desc="generate")
    if run.accelerator.is_main_process:
        with atomic.atomic_path(Path(output)) as tmp:
            with open(tmp, "w") as f:
                for r, g in zip(rows, ids):
                    rec = {"prompt": r.prompt, **answer_record(g, run.tokenizer)}
                    if prompts is None:
                        rec["reference"] = r.response
                    f.write(json.dumps(rec) + "\n")
    return len(rows)


def evaluate_model(config: DriftConfig, model: Optional[str]) -> Dict[str, float]:
    """Greedy ROUGE-1/2/L (percent) of ``model`` on the config's held-out examples, generated in batches of
    ``per_device_eval_batch_size`` (ROUGE whatever the run's ``eval_metric``: it is what was asked for)."""
    rows, instruction, what = _split_rows(config, "eval")
    run, pairs = _setup(config, model, rows, instruction, "eval", what)
    ids = generate(run, run.policy.get(), [p.prompt_ids for p in pairs], sample=False, seed=0, desc="eval",
                   batch_size=config.per_device_eval_batch_size)
    preds = [run.tokenizer.decode(g, skip_special_tokens=True).strip() for g in ids]
    return rouge(preds, [r.response for r in rows])
