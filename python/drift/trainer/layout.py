"""The files of a run directory, named in one place (what the trainer writes, resumes from and prunes).

    <output_dir>/config.json, fingerprint.json     the run's settings and data (rundir.py)
    <output_dir>/metrics.jsonl                     one record per line (io.MetricsLog)
    <output_dir>/base/eval.json                    the starting model's evaluation
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
from typing import List

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


class StageFiles:
    """The files of one stage folder (``iter_<k>/`` or ``base/``)."""

    def __init__(self, path: str | Path) -> None:
        self.dir = Path(path)

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def generations(self) -> Path:
        return self.dir / GENERATIONS_FILE

    @property
    def masks(self) -> Path:
        return self.dir / MASKS_FILE

    @property
    def reference(self) -> Path:
        return self.dir / REFERENCE_FILE

    @property
    def eval_json(self) -> Path:
        return self.dir / EVAL_FILE

    @property
    def model(self) -> Path:
        return self.dir / MODEL_DIR

    @property
    def train_info(self) -> Path:
        """``model/drift_train.json``; :attr:`trained_info` is the one that survives pruning."""
        return self.model / TRAIN_INFO_FILE

    @property
    def pruned(self) -> Path:
        return self.dir / PRUNED_FILE

    @property
    def trained_info(self) -> Path:
        """The stage's ``drift_train.json`` (in model/, or kept beside it once save_total_limit removed model/)."""
        return self.train_info if self.train_info.is_file() else self.pruned

    def trained(self) -> bool:
        return self.train_info.is_file() or self.pruned.is_file()

    @property
    def train_state_pointer(self) -> Path:
        return self.dir / TRAIN_STATE_POINTER

    def train_state(self, step: int) -> Path:
        return self.dir / f"{TRAIN_STATE_PREFIX}{step}"

    def train_states(self) -> List[Path]:
        """The saved ``train_state-<step>`` folders."""
        return list(self.dir.glob(f"{TRAIN_STATE_PREFIX}*"))


class RunLayout:
    """Paths of one run directory; a stage is an iteration index (``iter_<k>``) or a folder name (``"base"``)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir)

    @property
    def config_json(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def fingerprint_json(self) -> Path:
        return self.root / FINGERPRINT_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def base(self) -> Path:
        """``base/``: the starting model's evaluation."""
        return self.root / BASE_DIR

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

    def generations(self, stage: int | str) -> Path:
        return self.files(stage).generations

    def masks(self, stage: int | str) -> Path:
        return self.files(stage).masks

    def reference(self, stage: int | str) -> Path:
        return self.files(stage).reference

    def eval_json(self, stage: int | str) -> Path:
        return self.files(stage).eval_json

    def model(self, stage: int | str) -> Path:
        return self.files(stage).model

    def train_info(self, stage: int | str) -> Path:
        return self.files(stage).train_info
