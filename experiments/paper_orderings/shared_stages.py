"""Stages that several arms of one (task, seed) would compute identically, computed once and linked in.

The trainer skips every stage whose output exists (that is how it resumes), so an arm whose run
directory already holds another arm's identical stage starts after it. Which stages are identical:

- ``base/``: the untrained model evaluated greedily; the same for every arm.
- ``iter_0/``: the 1-epoch SFT warm start. ``sft_epoch1`` computes it; every self-play arm starts
  from it with the same seed, data order and ``sft_learning_rate`` (the swept self-play values do
  not enter it).
- ``iter_1/generations.pt`` and ``masks.pt``: iteration 1's opponent responses from that warm start
  and their LCS masks; they depend on the seed and the sampling settings only, not on the loss.
- all of ``drift``'s ``iter_1/`` for ``drift_extra_epochs``: the same method and data for iteration 1;
  the extra epochs then continue from it on its fixed data and reference.

Files are hard links (the trainer only ever writes new files and renames them into place).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Optional

from drift.trainer.checkpoints import clear_train_state
from drift.trainer.layout import GENERATIONS_FILE, MASKS_FILE, RunLayout, StageFiles

SELF_PLAY_ARMS = ("spin", "drift", "drift_no_dam", "drift_no_oal", "drift_extra_epochs")


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file under ``src`` into ``dst`` (created); no-op when ``dst`` exists."""
    if dst.exists() or not src.is_dir():
        return
    tmp = dst.with_name(dst.name + ".linking")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=os.link)
    tmp.rename(dst)


def link_files(src_dir: Path, dst_dir: Path, names: Iterable[str]) -> None:
    """Hard-link ``src_dir/<name>`` to ``dst_dir/<name>`` for each name present in src and absent in dst."""
    for name in names:
        src, dst = src_dir / name, dst_dir / name
        if src.is_file() and not dst.exists():
            dst_dir.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)


def seed_arm(arm_dir: Path, arm: str, sft_dir: Path, drift_dir: Path) -> None:
    """Link the stages ``arm`` shares with ``sft_dir`` (sft_epoch1) and ``drift_dir`` into ``arm_dir``."""
    if arm == "sft_epoch1":
        return
    if arm not in SELF_PLAY_ARMS:
        link_tree(RunLayout(sft_dir).base, RunLayout(arm_dir).base)  # sft_epoch2 has its own 2-epoch iter_0
    elif arm == "drift_extra_epochs":
        seed_self_play(arm_dir, sft_dir, None)
        link_tree(RunLayout(drift_dir).stage(1), RunLayout(arm_dir).stage(1))
    else:
        seed_self_play(arm_dir, sft_dir, None if arm == "drift" else drift_dir)


def seed_self_play(arm_dir: Path, sft_dir: Path, generations_from: Optional[Path]) -> None:
    """Link the base eval and the SFT warm start of ``sft_dir`` into a self-play run ``arm_dir``, and
    iteration 1's generations and masks of ``generations_from`` (None: the run makes its own)."""
    sft, arm = RunLayout(sft_dir), RunLayout(arm_dir)
    link_tree(sft.base, arm.base)
    link_tree(sft.stage(0), arm.stage(0))
    if generations_from is not None:
        link_files(RunLayout(generations_from).stage(1), arm.stage(1), (GENERATIONS_FILE, MASKS_FILE))


def prune_weights(run_dir: Path, keep: Iterable[str] = ()) -> int:
    """Delete the model weights and training states under ``run_dir`` except stage dirs in ``keep``.

    The metrics, evaluations, generations and masks stay; a pruned run cannot be resumed mid-way,
    so call it only on finished runs. Returns the bytes freed."""
    freed = 0
    keep = set(keep)
    for stage in RunLayout(run_dir).stages():
        if stage.name in keep:
            continue
        model = StageFiles(stage).model
        for f in list(model.glob("*.safetensors")) + list(model.glob("*.bin")):
            freed += f.stat().st_size
            f.unlink()
        clear_train_state(stage)
    return freed
