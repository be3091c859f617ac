"""What each stage of an iteration produces, typed: one dataclass per stage output, knowing its file.

    Generations  generations.pt  y' per training example (ids cut after EOS)
    Masks        masks.pt        the LCS masks of y and y', |LCS| per pair, gamma
    Reference    reference.pt    the opponent's masked log-prob sums of y and y'
    Evaluation   eval.json       held-out ROUGE-1/2/L, predictions (and the mechanism diagnostics)
    TrainInfo    model/drift_train.json (model_pruned.json once pruned)  the trained stage's steps and seconds

Each saves and loads the same dict (same keys) drift has always written, so old run folders
resume. :func:`cached` is how a stage output is reused: a stored file that matches its
manifest entry (or, without one, loads) is read back; a damaged one is computed again after a
one-line warning naming it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Type, TypeVar

from drift import atomic
from drift.trainer.layout import EVAL_FILE, GENERATIONS_FILE, MASKS_FILE, REFERENCE_FILE, StageFiles
from drift.trainer.manifest import Manifest

if TYPE_CHECKING:
    from drift.trainer.run import Run


class StageOutput:
    """A cached stage output: ``FILE`` in the stage folder, written with ``torch.save`` unless ``JSON``."""

    FILE: ClassVar[str]
    JSON: ClassVar[bool] = False

    def to_dict(self) -> Dict[str, Any]:
        """What the file holds."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: Dict[str, Any]):
        """The output a file's dict holds (KeyError/TypeError when it is not one)."""
        raise NotImplementedError

    def summary(self) -> Dict[str, Any]:
        """The numbers the iteration record reports, kept in the manifest (so reporting reads no tensors)."""
        return {}

    def save(self, path: Path) -> None:
        """Write the output to ``path`` atomically."""
        (atomic.write_json if self.JSON else atomic.torch_save)(path, self.to_dict())

    @classmethod
    def load(cls, path: Path):
        """Read the output at ``path``; :class:`drift.atomic.DamagedFile` naming it when it does not load."""
        try:
            d = atomic.read_json(path) if cls.JSON else atomic.torch_load(path)
            return cls.from_dict(d)
        except atomic.DamagedFile:
            raise
        except Exception as e:  # torch/zip/pickle errors of a cut or changed file, or a dict of another shape
            raise atomic.DamagedFile.from_error(path, "cannot be read", e) from None


@dataclass
class Generations(StageOutput):
    """``generations.pt``: the opponent's answer y' per training example (token ids, cut after EOS)."""

    FILE: ClassVar[str] = GENERATIONS_FILE
    ids: List[List[int]]
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return {"ids": self.ids, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Generations":
        return cls([list(g) for g in d["ids"]], float(d["seconds"]))

    def summary(self) -> Dict[str, Any]:
        return {"generation_s": self.seconds,
                "generated_tokens": sum(len(g) for g in self.ids) / len(self.ids)}


@dataclass
class Masks(StageOutput):
    """``masks.pt``: ``chosen`` / ``rejected`` (the LCS masks of y and y'), ``lcs_length``, ``gamma`` = mean |LCS|/|y|."""

    FILE: ClassVar[str] = MASKS_FILE
    chosen: List[List[bool]]
    rejected: List[List[bool]]
    lcs_length: List[int]
    gamma: float
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return {"chosen": self.chosen, "rejected": self.rejected, "lcs_length": self.lcs_length, "gamma": self.gamma,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Masks":
        return cls(d["chosen"], d["rejected"], d["lcs_length"], d["gamma"], float(d["seconds"]))

    def summary(self) -> Dict[str, Any]:
        return {"gamma": self.gamma, "lcs_mask_s": self.seconds}


@dataclass
class Reference(StageOutput):
    """``reference.pt``: the opponent's (the model before training) masked log-prob sums of y and y'."""

    FILE: ClassVar[str] = REFERENCE_FILE
    chosen: List[float]
    rejected: List[float]
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return {"chosen": self.chosen, "rejected": self.rejected, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Reference":
        return cls(list(d["chosen"]), list(d["rejected"]), float(d["seconds"]))

    def summary(self) -> Dict[str, Any]:
        return {"reference_s": self.seconds}


@dataclass
class Evaluation(StageOutput):
    """``eval.json``: greedy ROUGE-1/2/L (percent) on the held-out examples, with what was compared."""

    FILE: ClassVar[str] = EVAL_FILE
    JSON: ClassVar[bool] = True
    rouge1: float
    rouge2: float
    rougeL: float
    seconds: float
    predictions: List[str] = field(default_factory=list)
    prompts: List[str] = field(default_factory=list)
    references: List[str] = field(default_factory=list)
    diagnostics: Optional[Dict[str, Any]] = None  # drift.diagnostics.mechanism_diagnostics, with eval_diagnostics

    def to_dict(self) -> Dict[str, Any]:
        out = {"rouge1": self.rouge1, "rouge2": self.rouge2, "rougeL": self.rougeL, "seconds": self.seconds,
               "predictions": self.predictions, "prompts": self.prompts, "references": self.references}
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Evaluation":
        return cls(d["rouge1"], d["rouge2"], d["rougeL"], d["seconds"], d["predictions"], d["prompts"],
                   d["references"], d.get("diagnostics"))

    def scores(self) -> Dict[str, Any]:
        """The iteration record's fields: ROUGE, ``eval_s``, and the diagnostics as ``diag_<name>`` / ``diag_s``."""
        out: Dict[str, Any] = {"rouge1": self.rouge1, "rouge2": self.rouge2, "rougeL": self.rougeL,
                               "eval_s": self.seconds}
        diag = self.diagnostics or {}
        out.update({f"diag_{k}": v for k, v in diag.items()
                    if k != "seconds" and (isinstance(v, (int, float)) or v is None)})
        if "seconds" in diag:  # the diagnostics' forward pass, not part of eval_s (generation + ROUGE)
            out["diag_s"] = diag["seconds"]
        return out


@dataclass
class TrainInfo:
    """``model/drift_train.json`` of a trained stage (kept as ``model_pruned.json`` when save_total_limit removes
    the model): its optimizer steps, the step it resumed from, and the training seconds."""

    steps: int
    resumed_from_step: int
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return {"steps": self.steps, "resumed_from_step": self.resumed_from_step, "seconds": self.seconds}

    def save(self, path: Path) -> None:
        atomic.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path, redo: str = "") -> "TrainInfo":
        """The info at ``path``; :class:`drift.atomic.DamagedFile` naming it (and ``redo``) when it is damaged."""
        d = atomic.read_json(path, redo or "delete it and rerun the same command")
        try:
            return cls(int(d["steps"]), int(d["resumed_from_step"]), float(d["seconds"]))
        except (KeyError, TypeError, ValueError) as e:
            raise atomic.DamagedFile(path, f"not a drift_train.json (no {e})", redo) from None

    @classmethod
    def of_stage(cls, folder: Path) -> "TrainInfo":
        """The stage's info (from model/ or, once pruned, model_pruned.json)."""
        files = StageFiles(folder)
        return cls.load(files.trained_info, redo=retrain_hint(folder))


def retrain_hint(folder: Path) -> str:
    """What to do about a damaged trained stage in ``folder``: delete its model and rerun."""
    model = StageFiles(folder).model
    return (f"delete {model} and {StageFiles(folder).pruned.name} if present, then rerun the same command: "
            f"{Path(folder).name} is trained again from the previous stage's model")


Out = TypeVar("Out", bound=StageOutput)


def warn(run: "Run", message: str) -> None:
    """A one-line ``drift train: warning:`` on the main process's stderr."""
    if run.accelerator.is_main_process:
        print(f"drift train: warning: {message}", file=sys.stderr)


def stored(run: "Run", folder: Path, kind: Type[Out]) -> Optional[Out]:
    """The output ``kind`` stored in ``folder`` if it is there and sound; None (after a warning naming the file
    when it is damaged) when it must be computed. A sound output without a manifest entry (a kill between
    writing it and recording it, or a folder written before manifests) gets its entry here."""
    path = Path(folder) / kind.FILE
    if not path.is_file():
        return None
    manifest = Manifest(folder)
    problem = manifest.problem(kind.FILE)
    if problem is None:
        try:
            out = kind.load(path)
        except atomic.DamagedFile as e:
            problem = e
        else:
            if run.accelerator.is_main_process and kind.FILE not in manifest.entries():
                manifest.record(kind.FILE, out.summary())  # loaded whole: a kill came before its entry (or no manifest)
            return out
    warn(run, f"{problem}; computing it again")
    return None


def cached(run: "Run", folder: Path, kind: Type[Out], compute: Callable[[], Out]) -> Out:
    """The output ``kind`` of the stage in ``folder``: read back when stored and sound; else ``compute()``d (every
    process), saved by the main process with its manifest entry, before every process goes on."""
    out = stored(run, folder, kind)
    if out is not None:
        return out
    out = compute()
    if run.accelerator.is_main_process:
        manifest = Manifest(folder)
        manifest.forget(kind.FILE)
        out.save(Path(folder) / kind.FILE)
        manifest.record(kind.FILE, out.summary())
    run.accelerator.wait_for_everyone()
    return out


def summary(run: "Run", folder: Path, kind: Type[Out], compute: Callable[[], Out]) -> Dict[str, Any]:
    """The record numbers of the stored output ``kind`` of ``folder``: from its manifest (the file itself is not
    read, nor needed); without a manifest entry (an older run folder), from the output, :func:`cached`."""
    got = Manifest(folder).summary(kind.FILE)
    return dict(got) if got is not None else cached(run, folder, kind, compute).summary()
