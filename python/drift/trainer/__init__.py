"""The DRIFT trainer: :class:`DriftConfig` and :func:`train` (the loop lives in ``loop.py``, whose docstring maps
the modules beside it)."""

from drift.trainer.config import METHODS, DriftConfig, add_config_arguments, config_from_args
from drift.trainer.loop import train
from drift.trainer.objective import compute_loss
from drift.trainer.policy import load_model
from drift.trainer.records import format_table
from drift.trainer.stage_plan import plan

__all__ = ["METHODS", "DriftConfig", "add_config_arguments", "compute_loss", "config_from_args", "format_table", "load_model",
           "plan", "train"]
