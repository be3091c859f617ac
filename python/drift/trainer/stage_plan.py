"""The stages of a run, planned once from its config: what each ``iter_<k>/`` trains, on what, for how long."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from drift.trainer.config import DriftConfig
from drift.trainer.methods import method as method_traits

SFT, SELF_PLAY = "sft", "self_play"


@dataclass(frozen=True)
class Stage:
    """One planned stage of the run: ``iter_<index>/``, trained with ``objective`` (``"sft"``: cross-entropy on y;
    ``"self_play"``: the method's loss on (y, y') pairs) for ``epochs`` epochs."""

    index: int
    objective: str
    epochs: int
    data_from: int  # the iteration whose generations/reference a self-play stage trains on

    @property
    def self_play(self) -> bool:
        return self.objective == SELF_PLAY

    @property
    def warm_start(self) -> bool:
        """The optional SFT warm start (iteration 0), trained with ``sft_learning_rate`` when set."""
        return self.index == 0 and self.objective == SFT


def plan(config: DriftConfig) -> List[Stage]:
    """The stages of a run, in order (iteration 0 = SFT warm start when configured)."""
    stages = []
    if config.sft_warmup_epochs:
        stages.append(Stage(0, SFT, config.sft_warmup_epochs, 0))
    objective = SELF_PLAY if method_traits(config.method).self_play else SFT
    for k in range(1, config.iterations + 1):
        stages.append(Stage(k, objective, config.num_train_epochs, k))
    for e in range(config.extra_epochs_on_fixed_data):
        stages.append(Stage(2 + e, SELF_PLAY, 1, 1))
    return stages
