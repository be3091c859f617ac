"""The model being trained: loading a stage's model (a checkpoint or a LoRA lineage), and :class:`Policy`,
the current model, kept in memory between stages and loaded lazily from its folder when absent.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from drift import atomic
from drift.trainer.config import DriftConfig
from drift.trainer.layout import LINEAGE_FILE, MODEL_DIR, TRAIN_INFO_FILE
from drift.trainer.manifest import Manifest
from drift.trainer.results import retrain_hint


def load_model(path: str | Path, config: DriftConfig, device: torch.device):
    """A stage's model: a full checkpoint, or (LoRA, adapter-only) its base with every piece of its lineage merged
    in order (:func:`drift.trainer.lora.load_lineage`).

    A stage model of a run folder is first checked against its stage's manifest, and one that does
    not load is refused: :class:`drift.atomic.DamagedFile` names the file and how to train it again.
    """
    path = Path(path)
    with stage_model_errors(path):
        from transformers import AutoModelForCausalLM

        check_stage_model(path)
        if (path / LINEAGE_FILE).is_file():
            from drift.trainer.lora import load_lineage

            lineage = atomic.read_json(path / LINEAGE_FILE)
            for rel in lineage.get("adapters", []):  # folders written before stacked adapters
                check_stage_model((path / rel).resolve())
            model = load_lineage(path, getattr(torch, config.dtype))
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, config.dtype))
    return prepare_model(model, config, device)


def is_stage_model(path: Path) -> bool:
    """Whether ``path`` is the ``model/`` of a trained stage (it holds ``drift_train.json``)."""
    return Path(path).name == MODEL_DIR and (Path(path) / TRAIN_INFO_FILE).is_file()


def check_stage_model(path: Path) -> None:
    """Raise :class:`drift.atomic.DamagedFile` when a file of the stage model at ``path`` differs from what its
    stage's manifest recorded (nothing to check for other folders, or stages saved before manifests)."""
    path = Path(path)
    if path.name != MODEL_DIR:
        return
    problem = Manifest(path.parent).problem(MODEL_DIR)
    if problem is not None:
        raise atomic.DamagedFile(problem.path, problem.problem, retrain_hint(path.parent))


@contextlib.contextmanager
def stage_model_errors(path: Path) -> Iterator[None]:
    """Turn a stage model's load failure (a cut or changed file) into a one-line :class:`drift.atomic.DamagedFile`."""
    try:
        yield
    except atomic.DamagedFile:
        raise
    except Exception as e:
        if not is_stage_model(path):
            raise
        raise atomic.DamagedFile.from_error(path, "cannot be loaded", e, retrain_hint(path.parent)) from None


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
