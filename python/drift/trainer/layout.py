"""The files of a run directory, named in one place (what the trainer writes, resumes from and prunes).

    <output_dir>/config.json, fingerprint.json     the run's settings and data (rundir.py)
    <output_dir>/metrics.jsonl                     one record per line (metrics_log.py)
    <output_dir>/base/eval.json                    the starting model's evaluation
    <output_dir>/<stage>/manifest.json             size and SHA-256 of each file the stage wrote (manifest.py)
    <output_dir>/iter_<k>/generations.pt           opponent responses y'
                          masks.pt                 LCS masks and gamma
                          reference.pt             the opponent's masked log-probs
                          model/                   the trained model (+ drift_train.json, drift_lora_lineage.json)
                          model_pruned.json        drift_train.json of a model save_total_limit removed
                          train_state.json, train_state-<step>/   training state while the stage trains
                          eval.json                the stage model's held-out evaluation
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List

CONFIG_FILE = "config.json"
FINGERPRINT_FILE = "fingerprint.json"
METRICS_FILE = "metrics.jsonl"
BASE_DIR = "base"
STAGE_PREFIX = "iter_"
GENERATIONS_FILE = "generations.pt"
MASKS_FILE = "masks.pt"
REFERENCE_FILE = "reference.pt"
EVAL_FILE = "eval.json"
MODEL_DIR = "model"
TRAIN_INFO_FILE = "drift_train.json"  # in model/: steps, resumed_from_step, seconds
LINEAGE_FILE = "drift_lora_lineage.json"  # in an adapter-only model/: how to rebuild it
PRUNED_FILE = "model_pruned.json"
TRAIN_STATE_POINTER = "train_state.json"
TRAIN_STATE_PREFIX = "train_state-"
SCALER_FILE = "drift_grad_scaler.pt"  # in a train_state-<step>/ with fp16 loss scaling
MANIFEST_FILE = "manifest.json"  # in a stage folder: size and SHA-256 of what the stage wrote


def _child(folder: str, *parts: str) -> property:
    """A read-only property: the path ``parts`` under the instance's ``folder`` attribute."""
    return property(lambda self: getattr(self, folder).joinpath(*parts))


class StageFiles:
    """The files of one stage folder (``iter_<k>/`` or ``base/``)."""

    def __init__(self, path: str | Path) -> None:
        self.dir = Path(path)

    @property
    def name(self) -> str:
        return self.dir.name

    generations = _child("dir", GENERATIONS_FILE)
    masks = _child("dir", MASKS_FILE)
    reference = _child("dir", REFERENCE_FILE)
    eval_json = _child("dir", EVAL_FILE)
    model = _child("dir", MODEL_DIR)
    train_info = _child("dir", MODEL_DIR, TRAIN_INFO_FILE)  # trained_info: the one that survives pruning
    pruned = _child("dir", PRUNED_FILE)
    train_state_pointer = _child("dir", TRAIN_STATE_POINTER)  # names the latest train_state-<step>/
    manifest = _child("dir", MANIFEST_FILE)

    @property
    def trained_info(self) -> Path:
        """The stage's ``drift_train.json`` (in model/, or kept beside it once save_total_limit removed model/)."""
        return self.train_info if self.train_info.is_file() else self.pruned

    def trained(self) -> bool:
        return self.train_info.is_file() or self.pruned.is_file()

    def train_state(self, step: int) -> Path:
        return self.dir / f"{TRAIN_STATE_PREFIX}{step}"

    def train_states(self) -> List[Path]:
        """The saved ``train_state-<step>`` folders."""
        return list(self.dir.glob(f"{TRAIN_STATE_PREFIX}*"))


def _per_stage(name: str) -> Callable[["RunLayout", "int | str"], Path]:
    def path(self: "RunLayout", stage: int | str) -> Path:
        return getattr(self.files(stage), name)

    path.__name__, path.__doc__ = name, f"``StageFiles.{name}`` of stage ``stage``."
    return path


class RunLayout:
    """Paths of one run directory; a stage is an iteration index (``iter_<k>``) or a folder name (``"base"``)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir)

    config_json = _child("root", CONFIG_FILE)
    fingerprint_json = _child("root", FINGERPRINT_FILE)
    metrics = _child("root", METRICS_FILE)
    base = _child("root", BASE_DIR)  # the starting model's evaluation

    @staticmethod
    def stage_name(stage: int | str) -> str:
        return stage if isinstance(stage, str) else f"{STAGE_PREFIX}{stage}"

    def stage(self, stage: int | str) -> Path:
        return self.root / self.stage_name(stage)

    def files(self, stage: int | str) -> StageFiles:
        return StageFiles(self.stage(stage))

    def stages(self) -> List[Path]:
        """The ``iter_<k>`` folders present, by k."""
        found = [p for p in self.root.glob(f"{STAGE_PREFIX}*") if p.name[len(STAGE_PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(STAGE_PREFIX):]))

    # the files of stage ``stage`` (an index or "base"), as StageFiles names them
    generations = _per_stage("generations")
    masks = _per_stage("masks")
    reference = _per_stage("reference")
    eval_json = _per_stage("eval_json")
    model = _per_stage("model")
    train_info = _per_stage("train_info")
