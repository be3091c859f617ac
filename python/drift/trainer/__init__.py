"""The DRIFT trainer: :class:`DriftConfig` and :func:`train` (the loop lives in ``loop.py``)."""

from drift.trainer.config import METHODS, DriftConfig, add_config_arguments, config_from_args
from drift.trainer.loop import compute_loss, format_table, load_model, plan, train

__all__ = ["METHODS", "DriftConfig", "add_config_arguments", "compute_loss", "config_from_args", "format_table", "load_model",
           "plan", "train"]
