"""The run a stage works in: :class:`Run` carries the config, the accelerator, the tokenizer, the
:class:`~drift.trainer.policy.Policy` and the metrics log through the stages; :func:`open_run` builds one
(training, ``drift generate`` and ``drift eval`` alike).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from drift.trainer.accelerator import make_accelerator
from drift.trainer.config import DriftConfig
from drift.trainer.examples import load_tokenizer, prepare_tokenizer
from drift.trainer.metrics_log import MetricsLog
from drift.trainer.policy import Policy
from drift.trainer.precision import Precision, resolve_precision


@dataclass
class Run:
    config: DriftConfig
    accelerator: Any
    tokenizer: Any
    policy: Policy
    log: MetricsLog
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
             log: Optional[MetricsLog] = None) -> Run:
    """A :class:`Run` of ``config`` on the model at ``model_path`` (loaded when first used).

    ``accelerator`` default: :func:`make_accelerator` without trackers; ``tokenizer`` default:
    loaded from ``model_path``; ``log`` default: none kept (records are dropped).
    """
    acc = make_accelerator() if accelerator is None else accelerator
    tok = load_tokenizer(str(model_path)) if tokenizer is None else prepare_tokenizer(tokenizer, "tokenizer")
    log = MetricsLog(Path(os.devnull), False) if log is None else log
    return Run(config, acc, tok, Policy(model_path, config, acc.device), log)
