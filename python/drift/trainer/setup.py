"""Run setup, shared by training (loop.py) and ``drift generate`` / ``drift eval`` (tools.py).

The accelerator, the tokenizer and the examples encoded with it, the model (a checkpoint or a
LoRA lineage) behind a lazy :class:`Policy`, and :class:`Run`, which carries them through the
stages with the metrics log. :func:`open_run` builds a ``Run`` from a config and a model folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from drift import data
from drift.trainer import io
from drift.trainer.config import DriftConfig
from drift.trainer.layout import LINEAGE_FILE
from drift.trainer.precision import Precision, check_accelerator, resolve_precision


# =============================================================================================
# the accelerator
def make_accelerator(config: Optional[DriftConfig] = None):
    """An ``Accelerator``; on a machine without a GPU it is told so explicitly, which makes
    ``accelerate launch --multi_gpu --num_processes N`` (torchrun underneath) run N CPU
    processes with the gloo backend instead of N independent copies."""
    from accelerate import Accelerator

    no_gpu = not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())
    kwargs: Dict[str, Any] = {"cpu": True} if no_gpu else {}
    # accelerate maps `launch --use_fsdp` to FSDP on GPUs only; on CPUs it would silently run
    # DDP. FSDP2 (fully_shard) works over gloo, so it is switched on by hand there.
    fsdp_on_cpu = no_gpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_on_cpu:
        from accelerate.utils import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin()
    if config is not None:
        kwargs.update(log_with=config.report_to or None, project_dir=config.output_dir)
    acc = Accelerator(**kwargs)
    if fsdp_on_cpu and acc.num_processes > 1:
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        PartialState().distributed_type = acc.state.distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = kwargs["fsdp_plugin"]
    if config is not None:
        check_accelerator(acc, resolve_precision(config, acc.device))
    return acc


# =============================================================================================
# data: rows, tokenizer, encoding
def load_rows(config: DriftConfig, train_dataset: Any, eval_dataset: Any, stats: Dict[str, int]):
    """``(train rows, held-out rows, instruction)`` from the config's data, or from in-memory datasets."""
    if train_dataset is None:
        spec = data.resolve(config.data, config.eval_data, config.prompt_column, config.response_column,
                            config.instruction)
        tr, ev = data.load_splits(spec, config.num_train_examples, config.num_eval_examples, config.data_seed, stats,
                                  split_ids(config))
        return tr, ev, spec.instruction
    cols = (config.prompt_column or "prompt", config.response_column or "response")
    rows = data.in_memory_rows(train_dataset, *cols, "train_dataset", stats)
    pool = None if eval_dataset is None else data.in_memory_rows(eval_dataset, *cols, "eval_dataset", stats)
    tr, ev = data.split_rows(rows, pool, config.num_train_examples, config.num_eval_examples, config.data_seed,
                             split_ids(config))
    return tr, ev, config.instruction


def split_ids(config: DriftConfig) -> Optional[data.SplitIds]:
    """The row ids of ``config.split_file`` (None: the seeded shuffle)."""
    return None if config.split_file is None else data.read_split_file(config.split_file)


@dataclass
class Pair:
    """One training/eval example as token ids: the prompt (chat-formatted) and ground truth y (+ EOS)."""

    prompt_ids: List[int]
    response_ids: List[int]
    response_text: str
    prompt_truncated: bool = False
    response_truncated: bool = False  # cut at max_response_length: no EOS appended
    prompt_text: str = ""  # the prompt as given (before truncation and the chat template)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:  # a missing folder reads as a (malformed) hub repo id to transformers
        raise FileNotFoundError(f"model_name_or_path: {path!r} is not a model folder here and could not be "
                                f"loaded as a hub model ({str(e).splitlines()[0]})") from e
    return prepare_tokenizer(tok, f"the tokenizer of {path}")


def prepare_tokenizer(tok, name: str):
    """Pad with EOS where the tokenizer has no pad token; refuse one without EOS."""
    if tok.eos_token_id is None:
        raise ValueError(f"model_name_or_path: {name} has no EOS token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def encode(tokenizer, example: data.Example, config: DriftConfig, instruction: Optional[str]) -> Pair:
    """Prompt text truncated to ``max_prompt_length`` tokens, wrapped in the chat template; y + EOS.

    A response longer than ``max_response_length`` tokens is cut there and gets no EOS: training
    on ``cut + EOS`` would teach the model to stop mid-sentence. :func:`truncation_report` counts
    the cuts (the trainer warns and logs them).
    """
    full = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    ids = full[: config.max_prompt_length]
    text = tokenizer.decode(ids)
    content = f"{instruction}\n\n{text}" if instruction else text
    turns = [{"role": "user", "content": content}]
    if example.messages:  # a conversation: its turns, the last user turn truncated like a prompt
        last = max(i for i, (role, _) in enumerate(example.messages) if role == "user")
        turns = [{"role": r, "content": content if i == last else c} for i, (r, c) in enumerate(example.messages)]
    if config.use_chat_template and getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template(turns, add_generation_prompt=True)
        prompt = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
    else:
        prompt = tokenizer("\n".join(t["content"] for t in turns) + "\n", add_special_tokens=True)["input_ids"]
    response = tokenizer(example.response, add_special_tokens=False)["input_ids"]
    if len(response) > config.max_response_length:
        return Pair(prompt, response[: config.max_response_length], example.response, len(full) > len(ids), True,
                    example.prompt)
    return Pair(prompt, response + [tokenizer.eos_token_id], example.response, len(full) > len(ids), False,
                example.prompt)


def truncation_report(train_set: Sequence[Pair], eval_set: Sequence[Pair], stats: Dict[str, int], config: DriftConfig,
                      pairs_per_step: int) -> Dict[str, Any]:
    """The ``kind: data`` record (example counts, cuts, dropped rows) and a warning line per problem."""
    cut_y = sum(p.response_truncated for p in train_set)
    cut_x = sum(p.prompt_truncated for p in train_set) + sum(p.prompt_truncated for p in eval_set)
    left_out = len(train_set) % pairs_per_step
    rec: Dict[str, Any] = {"kind": "data", "global_step": 0, "train_examples": len(train_set),
                           "eval_examples": len(eval_set), "responses_truncated": cut_y, "prompts_truncated": cut_x,
                           "pairs_left_out_per_epoch": left_out, **stats}
    warnings = []
    if cut_y:
        warnings.append(f"max_response_length: {cut_y} of {len(train_set)} training responses are longer than "
                        f"{config.max_response_length} tokens and were cut (without EOS, so the model is not taught "
                        "to stop there); raise max_response_length to keep them whole")
    if left_out:
        warnings.append(f"num_train_examples: {left_out} of {len(train_set)} training pairs do not fill an optimizer "
                        f"step ({pairs_per_step} pairs) and are left out of each epoch (a different {left_out} each "
                        "epoch)")
    return {"record": rec, "warnings": warnings}


# =============================================================================================
# the model
def load_model(path: str | Path, config: DriftConfig, device: torch.device):
    """A stage's model: a full checkpoint, or (LoRA, adapter-only) its base with every adapter of its lineage merged."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if (path / LINEAGE_FILE).is_file():
        from drift.trainer.lora import load_lineage

        return prepare_model(load_lineage(path, getattr(torch, config.dtype)), config, device)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, config.dtype))
    return prepare_model(model, config, device)


def prepare_model(model, config: DriftConfig, device: torch.device):
    """Move ``model`` to the accelerator's device and apply the config's memory settings."""
    model.to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


class Policy:
    """The current model: kept in memory between stages, loaded lazily from ``path`` when absent."""

    def __init__(self, path: str | Path, config: DriftConfig, device: torch.device) -> None:
        self.path, self.config, self.device, self.model = Path(path), config, device, None

    def get(self):
        if self.model is None:
            self.model = load_model(self.path, self.config, self.device)
        return self.model

    def set(self, path: Path, model=None) -> None:
        self.path, self.model = Path(path), model


# =============================================================================================
# the run
@dataclass
class Run:
    config: DriftConfig
    accelerator: Any
    tokenizer: Any
    policy: Policy
    log: io.MetricsLog
    precision: Optional[Precision] = None  # default: resolved from config and accelerator.device

    def __post_init__(self) -> None:
        if self.precision is None:
            self.precision = resolve_precision(self.config, self.accelerator.device)

    def emit(self, record: Dict[str, Any]) -> None:
        """Append to metrics.jsonl and forward numbers to the configured accelerate trackers."""
        self.log.append(record)
        if self.config.report_to:
            nums, step = tracker_payload(record)
            self.accelerator.log(nums, step=step)


def tracker_payload(record: Dict[str, Any]):
    """``(values, step)`` for the trackers: the record's numbers as ``<kind>/<name>``, at its global step.

    Step records carry the optimizer step; iteration records the global step at the end of
    their stage (0 for the base model), so per-iteration curves (ROUGE, gamma) line up with the loss.
    """
    nums = {f"{record['kind']}/{k}": v for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "global_step"}
    return nums, int(record["global_step"])


def open_run(config: DriftConfig, model_path: str | Path, accelerator: Any = None, tokenizer: Any = None,
             log: Optional[io.MetricsLog] = None) -> Run:
    """A :class:`Run` of ``config`` on the model at ``model_path`` (loaded when first used).

    ``accelerator`` default: :func:`make_accelerator` without trackers; ``tokenizer`` default:
    loaded from ``model_path``; ``log`` default: none kept (records are dropped).
    """
    acc = make_accelerator() if accelerator is None else accelerator
    tok = load_tokenizer(str(model_path)) if tokenizer is None else prepare_tokenizer(tokenizer, "tokenizer")
    log = io.MetricsLog(Path(os.devnull), False) if log is None else log
    return Run(config, acc, tok, Policy(model_path, config, acc.device), log)
