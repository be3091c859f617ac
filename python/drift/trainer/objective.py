"""The training objective of each method on one micro-batch (docs/METHOD.md sections 0 and 3)."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch

from drift import losses
from drift.trainer import batching
from drift.trainer.batching import Batch, SelfPlayExample, collate, response_logits
from drift.trainer.methods import method as method_traits
from drift.trainer.run import Run


def oal_target_mask(items: Sequence[SelfPlayExample], response_mask: torch.Tensor, eos_id: int) -> torch.Tensor:
    """V(y) for OAL: the tokens of y except the EOS the trainer appended (ours).

    EOS is not vocabulary of the summary; pushing ``max_j p(EOS | x, y'_<j)`` up raises EOS at
    whichever position already favours it - often the first - and the model learns to stop
    at once (seen on the demo: empty outputs after one iteration).
    """
    mask = response_mask.clone()
    for i, it in enumerate(items):
        if it.chosen_ids and it.chosen_ids[-1] == eos_id:
            mask[i, len(it.chosen_ids) - 1] = False
    return mask


def self_play_output(logits: torch.Tensor, b: Batch, cm: torch.Tensor, rm: torch.Tensor,
                     items: Sequence[SelfPlayExample], run: Run, *, beta: float,
                     oal_weight: float) -> losses.DriftLossOutput:
    """:func:`drift.drift_loss` of one self-play micro-batch, differentiable in every term.

    ``logits``: (2n, T, V), the policy's scores of ``b`` (:func:`batching.self_play_batch`: the n chosen rows,
    then the n rejected ones); ``cm`` / ``rm``: the method's token masks; the reference sums are the items';
    V(y) is y without the EOS the trainer appended (:func:`oal_target_mask`), the OAL max runs over every
    generated position of y', and the self-play loss is the run's ``loss_type``.
    """
    n, device = len(items), logits.device
    ref_c = torch.tensor([it.reference_chosen for it in items], dtype=torch.float32, device=device)
    ref_r = torch.tensor([it.reference_rejected for it in items], dtype=torch.float32, device=device)
    return losses.drift_loss(
        logits[:n], b.labels[:n], cm, logits[n:], b.labels[n:], rm, ref_c, ref_r,
        chosen_response_mask=oal_target_mask(items, b.response_mask[:n], run.tokenizer.eos_token_id),
        rejected_response_mask=b.response_mask[n:], beta=beta, oal_weight=oal_weight, loss_type=run.config.loss_type,
    )


def compute_loss(model, items: Sequence[Any], objective: str, run: Run) -> Dict[str, torch.Tensor]:
    """The method's loss on one micro-batch; returns the differentiable ``loss`` and logged parts.

    ``objective``: the stage's objective, ``"sft"`` or ``"self_play"`` (:class:`drift.trainer.stage_plan.Stage`).

    SFT: mean token cross-entropy on y. Self-play: :func:`drift.drift_loss` with the method's
    masks (DAM or full), ``loss_type`` and ``oal_weight`` (0 for spin and drift_no_oal); the OAL
    max runs over all generated positions of y' and its targets are the ids of y without its
    final EOS.
    """
    cfg, pad, device = run.config, run.tokenizer.pad_token_id, run.accelerator.device
    if objective == "sft":
        b = collate([it.prompt_ids for it in items], [it.response_ids for it in items], pad, device)
        lp = losses.token_logps(response_logits(model, b), b.labels, b.response_mask)
        loss = -lp.sum() / b.response_mask.sum()
        return {"loss": loss, "tokens": b.attention_mask.sum()}
    b, cm, rm = batching.self_play_batch(items, pad, device)
    out = self_play_output(response_logits(model, b), b, cm, rm, items, run, beta=cfg.beta,
                           oal_weight=cfg.oal_weight if method_traits(cfg.method).oal else 0.0)
    return {
        "loss": out.loss, "self_play_loss": out.self_play_loss.detach(), "oal_loss": out.oal_loss.detach(),
        "rewards/chosen": out.chosen_rewards.mean(), "rewards/rejected": out.rejected_rewards.mean(),
        "rewards/margins": out.margins.mean(), "rewards/accuracy": (out.margins > 0).float().mean(),
        "tokens": b.attention_mask.sum(),
    }
