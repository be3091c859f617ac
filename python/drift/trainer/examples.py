"""The training and held-out examples: rows from the config's data (or in-memory datasets), the tokenizer,
and each row encoded as an :class:`Example` (chat-formatted prompt ids, y + EOS), with the report of what was cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from drift import data
from drift.trainer.config import DriftConfig


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
class Example:
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


def encode(tokenizer, example: data.Row, config: DriftConfig, instruction: Optional[str]) -> Example:
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
        return Example(prompt, response[: config.max_response_length], example.response, len(full) > len(ids), True,
                    example.prompt)
    return Example(prompt, response + [tokenizer.eos_token_id], example.response, len(full) > len(ids), False,
                example.prompt)


def truncation_report(train_set: Sequence[Example], eval_set: Sequence[Example], stats: Dict[str, int], config: DriftConfig,
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
