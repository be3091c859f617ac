"""``drift.oal_loss``: the occurrence-aware loss (temporary eager version)."""

from __future__ import annotations

from typing import Optional

import torch


def oal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    logits_mask: Optional[torch.Tensor] = None,
    targets_mask: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """OAL: ``-sum_{v in V(y)} log max_t softmax(logits[b, t])[v]`` per row, reduced."""
    B, T, V = logits.shape
    M = targets.shape[1]
    if logits_mask is None:
        logits_mask = torch.ones((B, T), dtype=torch.bool, device=logits.device)
    if targets_mask is None:
        targets_mask = targets != -100
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logp = logits.to(dtype).log_softmax(-1)
    idx = torch.where(targets_mask, targets, 0).long()
    vals = logp.gather(2, idx[:, None, :].expand(B, T, M))
    vals = vals.masked_fill(~logits_mask[:, :, None], float("-inf"))
    arg = vals.argmax(dim=1, keepdim=True)
    best = vals.gather(1, arg).squeeze(1)
    same = (idx[:, :, None] == idx[:, None, :]) & targets_mask[:, None, :]
    earlier = torch.ones((M, M), dtype=torch.bool, device=logits.device).tril(-1)
    first = targets_mask & ~(same & earlier).any(-1)
    count = first & logits_mask.any(1, keepdim=True)
    rows = -torch.where(count, best, torch.zeros((), dtype=dtype, device=logits.device)).sum(1)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.mean()
