"""What a training stage leaves on disk: its training state while it trains, then its model.

- ``train_state-<step>/`` (accelerate's state, + the fp16 loss scaler) and ``train_state.json``
  naming the latest: saved every ``save_steps``, resumed from, removed once ``model/`` is saved.
- ``model/``: the weights (or a LoRA adapter stacked with its lineage's), the tokenizer and
  ``drift_train.json``; :func:`prune_models` keeps only the last ``save_total_limit`` of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from drift import atomic
from drift.trainer import lora
from drift.trainer.layout import LINEAGE_FILE, MODEL_DIR, SCALER_FILE, TRAIN_INFO_FILE, RunLayout, StageFiles
from drift.trainer.manifest import Manifest
from drift.trainer.results import TrainInfo, warn
from drift.trainer.run import Run


def latest_train_state(d: Path) -> Optional[Dict[str, Any]]:
    """``{"step", "dir"}`` of the stage's last saved training state, or None; :class:`drift.atomic.DamagedFile`
    when ``train_state.json`` is damaged."""
    pointer = StageFiles(d).train_state_pointer
    if pointer.is_file():
        state = atomic.read_json(pointer)
        if not (isinstance(state, dict) and isinstance(state.get("dir"), str) and isinstance(state.get("step"), int)):
            raise atomic.DamagedFile(pointer, "not a training-state pointer")
        if (d / state["dir"]).is_dir():
            return state
    return None


def load_train_state(run: Run, d: Path, scaler=None) -> int:
    """Restore the stage's last saved training state (and ``scaler``'s); the step to go on from (0: none).

    A damaged training state (``train_state.json`` unreadable, a file that does not match its manifest
    entry) is dropped after a one-line warning and the stage trains from its start: the same result,
    as resuming is exact. One without manifest entries that fails to load is refused, naming it.
    """
    try:
        state = latest_train_state(d)
        problem = None if state is None else Manifest(d).problem(state["dir"])
    except atomic.DamagedFile as e:
        state, problem = None, e
    if problem is not None:
        warn(run, f"{problem}; training {d.name} again from its start")
        run.accelerator.wait_for_everyone()
        if run.accelerator.is_main_process:
            clear_train_state(d)
        run.accelerator.wait_for_everyone()
        return 0
    if state is None:
        return 0
    try:
        run.accelerator.load_state(str(d / state["dir"]))
    except Exception as e:  # a state saved before manifests, damaged: what was loaded of it is unknown
        raise atomic.DamagedFile.from_error(
            d / state["dir"], "cannot be loaded", e,
            f"delete it and {StageFiles(d).train_state_pointer.name}, then rerun the same command "
            f"({d.name} trains again from its start)") from None
    if scaler is not None and (d / state["dir"] / SCALER_FILE).is_file():
        scaler.load_state_dict(torch.load(d / state["dir"] / SCALER_FILE, weights_only=False))
    return int(state["step"])


def save_train_state(run: Run, d: Path, step: int, scaler=None) -> None:
    """``train_state-<step>/``, filled under a temporary name, then named by ``train_state.json``; older ones go."""
    acc, files = run.accelerator, StageFiles(d)
    tmp = d / f".{files.train_state(step).name}.tmp"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp), safe_serialization=False)
    acc.wait_for_everyone()
    if acc.is_main_process:
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / SCALER_FILE)
        final = files.train_state(step)
        if final.exists():
            shutil.rmtree(final)
        manifest = Manifest(d)
        manifest.forget(final.name)
        tmp.rename(final)
        manifest.record(final.name)
        atomic.write_json(files.train_state_pointer, {"step": step, "dir": final.name})
        clear_train_state(d, keep=final)
    acc.wait_for_everyone()


def clear_train_state(d: Path, keep: Optional[Path] = None) -> None:
    """Remove the stage's saved training states but ``keep`` (with None, also ``train_state.json``)."""
    files = StageFiles(d)
    for old in files.train_states():
        if old != keep:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    if keep is None:
        files.train_state_pointer.unlink(missing_ok=True)


def save_stage_model(run: Run, d: Path, model, state_dict, info: TrainInfo, lora_parent: Optional[Path]) -> None:
    """``model/``: the weights (or a LoRA adapter stacked with its lineage's), the tokenizer and drift_train.json.

    ``lora_parent``: for an adapter-only stage, the model its training started from; the parent's adapters and
    the stage's own are stacked into one adapter against the original base (drift.trainer.lora) and the
    resulting lineage stored. None: ``model`` is saved as it is (a full model).
    """
    if not run.accelerator.is_main_process:
        return
    manifest = Manifest(d)
    manifest.forget(MODEL_DIR)
    with atomic.atomic_dir(StageFiles(d).model) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        if lora_parent is not None:
            atomic.write_json(tmp / LINEAGE_FILE, lora.write_stacked(tmp, lora_parent))
        run.tokenizer.save_pretrained(tmp)
        info.save(tmp / TRAIN_INFO_FILE)
    manifest.record(MODEL_DIR)


def prune_models(out: Path, indices: Sequence[int], limit: int) -> None:
    """Keep the ``model/`` of only the last ``limit`` trained stages among ``indices`` (save_total_limit).

    A removed model leaves its ``drift_train.json`` as ``model_pruned.json``, so a rerun knows the
    stage was trained. A stacked LoRA adapter holds its whole lineage and goes like a full model;
    adapters of run folders written before stacking are kept (later stages of theirs merge them).
    """
    layout = RunLayout(out)
    with_model = [i for i in indices if layout.train_info(i).is_file()]
    for i in with_model[:-limit]:
        files = layout.files(i)
        if (files.model / LINEAGE_FILE).is_file() and "adapters" in atomic.read_json(files.model / LINEAGE_FILE):
            continue
        shutil.copyfile(files.train_info, files.pruned)
        Manifest(files.dir).forget(MODEL_DIR)
        shutil.rmtree(files.model)
