"""drift: DRIFT self-play fine-tuning for causal language models.

Public API:

- :func:`lcs_mask` - batched longest-common-subsequence masks (DAM, METHOD.md section 1);
- :func:`token_logps`, :func:`oal_loss`, :func:`spin_loss`, :func:`dam_loss`, :func:`drift_loss`,
  :class:`DriftLoss` - the fused training losses (METHOD.md sections 0-3; ``loss_type`` one of
  :data:`LOSS_TYPES`);
- :func:`build_info`, :func:`cuda_available`, :func:`set_num_threads`, :func:`get_num_threads`;
- :mod:`drift.reference` - plain-Python/PyTorch reference implementations for tests;
- :func:`drift.train` / :class:`drift.DriftConfig` - the trainer (``drift.trainer``, loaded lazily).
"""

from drift._native import build_info, cuda_available, get_num_threads, set_num_threads
from drift.ops.lcs import LcsMasks, lcs_mask
from drift.losses import (
    LOSS_TYPES,
    DriftLoss,
    DriftLossOutput,
    SelfPlayLoss,
    dam_loss,
    drift_loss,
    oal_loss,
    spin_loss,
    token_logps,
)
from drift import reference

__version__ = "0.1.0"


def __getattr__(name: str):
    """``drift.train`` / ``drift.DriftConfig``: the trainer, imported on first use (it needs the train extras)."""
    if name in ("train", "DriftConfig"):
        import drift.trainer

        return getattr(drift.trainer, name)
    raise AttributeError(f"module 'drift' has no attribute {name!r}")

__all__ = [
    "LOSS_TYPES",
    "DriftLoss",
    "DriftLossOutput",
    "LcsMasks",
    "SelfPlayLoss",
    "build_info",
    "cuda_available",
    "dam_loss",
    "drift_loss",
    "get_num_threads",
    "lcs_mask",
    "oal_loss",
    "reference",
    "set_num_threads",
    "spin_loss",
    "token_logps",
]
