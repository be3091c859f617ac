"""The training methods and what each one does, in one table (docs/METHOD.md section 4).

``self_play``: trains on (y, y') pairs with reference log-probs (else SFT on y);
``dam``: the self-play sums run over the LCS difference tokens only (else over every token);
``oal``: adds ``oal_weight * L_OAL`` (else the OAL term is neither computed nor logged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class Method:
    name: str
    self_play: bool
    dam: bool
    oal: bool


METHOD_TABLE: Dict[str, Method] = {m.name: m for m in (
    Method("sft", self_play=False, dam=False, oal=False),
    Method("spin", self_play=True, dam=False, oal=False),
    Method("drift", self_play=True, dam=True, oal=True),
    Method("drift_no_dam", self_play=True, dam=False, oal=True),
    Method("drift_no_oal", self_play=True, dam=True, oal=False),
)}
METHODS = tuple(METHOD_TABLE)


def method(name: str) -> Method:
    """The traits of the method called ``name`` (KeyError for an unknown one; DriftConfig.validate names it)."""
    return METHOD_TABLE[name]
