"""``drift.token_logps``: per-token log-probs of the labels (temporary eager version)."""

from __future__ import annotations

from typing import Optional

import torch

from drift._checks import require_integer, require_rank, require_same_device, require_shape, require_tensor

LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def token_logps(logits: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-token log-probs ``log_softmax(logits[b, t])[labels[b, t]]``, (B, T)."""
    logits = require_tensor(logits, "logits")
    require_rank(logits, "logits", 3, "(B, T, V)")
    labels = require_tensor(labels, "labels")
    require_integer(labels, "labels")
    require_shape(labels, "labels", tuple(logits.shape[:2]), "(B, T)")
    require_same_device(labels, "labels", logits, "logits")
    if mask is None:
        mask = labels != -100
    valid = mask
    idx = torch.where(valid, labels, 0).long()
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logp = logits.to(out_dtype).log_softmax(-1).gather(-1, idx[..., None]).squeeze(-1)
    return torch.where(valid, logp, torch.zeros((), dtype=out_dtype, device=logits.device))
