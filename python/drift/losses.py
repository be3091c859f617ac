"""The DRIFT training losses (METHOD.md sections 1-3), on top of the fused ops in ``drift.ops``.

- :func:`token_logps` - per-token log-probs of the labels (fused selective log-softmax);
- :func:`oal_loss` - the occurrence-aware loss (fused, METHOD.md section 2);
- :func:`spin_loss`, :func:`dam_loss` - the logistic self-play losses on sequence sums;
- :func:`drift_loss` / :class:`DriftLoss` - ``L_DAM + oal_weight * L_OAL`` from logits.

Label alignment is the caller's job everywhere: ``logits[b, t]`` scores ``labels[b, t]``
(shift by one for a causal LM, as for cross-entropy).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any, Dict, Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F

from drift._checks import (
    as_real, require_bool, require_floating, require_rank, require_same_device, require_shape, require_tensor,
)
from drift.ops.oal import oal_loss
from drift.ops.token_logps import token_logps

__all__ = [
    "DriftLoss",
    "DriftLossOutput",
    "SelfPlayLoss",
    "dam_loss",
    "drift_loss",
    "oal_loss",
    "spin_loss",
    "token_logps",
]


class SelfPlayLoss(NamedTuple):
    """Result of :func:`spin_loss` / :func:`dam_loss`.

    ``loss``: scalar, mean over the batch of ``-logsigmoid(margins)`` (differentiable);
    ``chosen_rewards`` / ``rejected_rewards``: (B,) ``beta * (policy - reference)``, detached;
    ``margins``: (B,) ``chosen_rewards - rejected_rewards``, detached.
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    margins: torch.Tensor


class DriftLossOutput(NamedTuple):
    """Result of :func:`drift_loss`.

    ``loss`` = ``self_play_loss + oal_weight * oal_loss`` (scalar, differentiable);
    ``self_play_loss``, ``oal_loss``: the two scalar parts (``oal_loss`` is a zero tensor when
    ``oal_weight == 0``); ``chosen_rewards``, ``rejected_rewards``, ``margins``: (B,), detached.
    """

    loss: torch.Tensor
    self_play_loss: torch.Tensor
    oal_loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    margins: torch.Tensor


def _check_beta(beta: float) -> float:
    beta = as_real(beta, "beta")
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta: expected a finite value > 0, got {beta}")
    return beta


def _check_oal_weight(oal_weight: float) -> float:
    oal_weight = as_real(oal_weight, "oal_weight")
    if not math.isfinite(oal_weight) or oal_weight < 0:
        raise ValueError(f"oal_weight: expected a finite value >= 0, got {oal_weight}")
    return oal_weight


@contextlib.contextmanager
def _argument_names(names: Dict[str, str]) -> Iterator[None]:
    """Re-raises a TypeError/ValueError of an inner call under the caller's argument names.

    ``names`` maps an inner argument name (the prefix of drift's messages, ``"targets: ..."``)
    to the name the caller passed it as (``"oal_targets"``).
    """
    try:
        yield
    except (TypeError, ValueError) as exc:
        message = str(exc)
        inner = message.split(":", 1)[0]
        if inner in names and type(exc) in (TypeError, ValueError):
            raise type(exc)(names[inner] + message[len(inner):]) from exc
        raise


def _check_sequence_logps(x: object, name: str, ref: Optional[torch.Tensor], ref_name: str) -> torch.Tensor:
    x = require_tensor(x, name)
    require_floating(x, name, "log-probs")
    require_rank(x, name, 1, "(B,)")
    if ref is not None:
        require_same_device(x, name, ref, ref_name)
        require_shape(x, name, tuple(ref.shape), "(B,)")
    return x


def spin_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> SelfPlayLoss:
    """The SPIN logistic loss on sequence log-prob sums (METHOD.md, "SPIN").

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) floating log-probs of the chosen
            (ground-truth ``y``) and rejected (generated ``y'``) responses under the policy.
        reference_chosen_logps, reference_rejected_logps: (B,) the same under the reference
            (the opponent ``pi_t``); treated as constants.
        beta: the inverse temperature (> 0).

    Returns:
        :class:`SelfPlayLoss`: ``loss = mean_b -logsigmoid(beta*((pc-rc) - (pr-rr)))``
        (computed in the promoted dtype of the four inputs, at least float32), rewards
        ``beta*(policy - reference)`` and margins, detached. An empty batch (B = 0) gives
        ``loss = 0`` (a sum over no pairs; no gradient), not the NaN of an empty mean.

    Raises:
        TypeError: non-tensor or non-floating inputs, a non-real ``beta``.
        ValueError: wrong ranks, shapes or devices, ``beta`` not finite and > 0.
    """
    beta = _check_beta(beta)
    pc = _check_sequence_logps(policy_chosen_logps, "policy_chosen_logps", None, "")
    pr = _check_sequence_logps(policy_rejected_logps, "policy_rejected_logps", pc, "policy_chosen_logps")
    rc = _check_sequence_logps(reference_chosen_logps, "reference_chosen_logps", pc, "policy_chosen_logps")
    rr = _check_sequence_logps(reference_rejected_logps, "reference_rejected_logps", pc, "policy_chosen_logps")
    dtype = torch.float32
    for x in (pc, pr, rc, rr):
        dtype = torch.promote_types(dtype, x.dtype)
    chosen = pc.to(dtype) - rc.detach().to(dtype)
    rejected = pr.to(dtype) - rr.detach().to(dtype)
    logits = beta * (chosen - rejected)
    loss = -F.logsigmoid(logits).mean() if logits.numel() else logits.sum()
    chosen_rewards = (beta * chosen).detach()
    rejected_rewards = (beta * rejected).detach()
    return SelfPlayLoss(loss, chosen_rewards, rejected_rewards, chosen_rewards - rejected_rewards)


def _masked_sum(token_logps_: object, mask: object, name: str, mask_name: str, batch: Optional[int]) -> torch.Tensor:
    x = require_tensor(token_logps_, name)
    require_floating(x, name, "token log-probs")
    require_rank(x, name, 2, "(B, T)")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name}: batch size {x.shape[0]} differs from policy_chosen_token_logps's {batch}")
    m = require_tensor(mask, mask_name)
    require_bool(m, mask_name)
    require_same_device(m, mask_name, x, name)
    require_shape(m, mask_name, tuple(x.shape), "(B, T)")
    # Summed in at least float32: a bf16/fp16 running sum over T tokens loses digits.
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=-1)


def dam_loss(
    policy_chosen_token_logps: torch.Tensor,
    policy_rejected_token_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_mask: torch.Tensor,
    *,
    beta: float = 0.1,
) -> SelfPlayLoss:
    """The DAM loss: the SPIN loss on masked log-prob sums (METHOD.md section 1).

    Args:
        policy_chosen_token_logps: (B, Tc) per-token log-probs of ``y`` under the policy.
        policy_rejected_token_logps: (B, Tr) per-token log-probs of ``y'`` under the policy.
        reference_chosen_logps, reference_rejected_logps: (B,) the reference's log-prob sums
            over the same masked tokens (computed once per iteration), constants.
        chosen_mask: (B, Tc) bool, True on the tokens that count (the difference tokens of
            ``y`` for DAM; the whole response for SPIN).
        rejected_mask: (B, Tr) bool, likewise for ``y'``.
        beta: the inverse temperature (> 0).

    Returns:
        :class:`SelfPlayLoss` of :func:`spin_loss` applied to
        ``sum_t mask * token_logps`` on each side (summed in at least float32, so bf16/fp16
        token log-probs lose nothing to the sum). A pair with both masks empty has margin 0:
        it contributes ``log 2`` to the mean and no gradient.
    """
    pc = _masked_sum(policy_chosen_token_logps, chosen_mask, "policy_chosen_token_logps", "chosen_mask", None)
    batch = pc.shape[0]
    pr = _masked_sum(policy_rejected_token_logps, rejected_mask, "policy_rejected_token_logps", "rejected_mask", batch)
    require_same_device(pr, "policy_rejected_token_logps", pc, "policy_chosen_token_logps")
    return spin_loss(pc, pr, reference_chosen_logps, reference_rejected_logps, beta=beta)


def drift_loss(
    chosen_logits: torch.Tensor,
    chosen_labels: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_logits: torch.Tensor,
    rejected_labels: torch.Tensor,
    rejected_mask: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    oal_targets: Optional[torch.Tensor] = None,
    oal_targets_mask: Optional[torch.Tensor] = None,
    rejected_response_mask: Optional[torch.Tensor] = None,
    beta: float = 0.1,
    oal_weight: float = 1.0,
) -> DriftLossOutput:
    """The DRIFT objective ``L_DAM + oal_weight * L_OAL`` from the policy's logits (METHOD.md 3).

    Args:
        chosen_logits: (B, Tc, V) policy logits over ``(x, y)``, aligned so that
            ``chosen_logits[b, t]`` scores ``chosen_labels[b, t]``.
        chosen_labels: (B, Tc) integer ids of ``y`` (anything at positions where
            ``chosen_mask`` is False).
        chosen_mask: (B, Tc) bool, the tokens of ``y`` that enter the self-play sum (the DAM
            difference mask for DRIFT; the full response mask gives SPIN).
        rejected_logits, rejected_labels, rejected_mask: the same for ``y'`` (B, Tr, V).
        reference_chosen_logps, reference_rejected_logps: (B,) the reference's masked sums.
        oal_targets: (B, M) ids of the ground truth ``y`` whose distinct ids form ``V(y)``;
            ``None`` uses ``chosen_labels`` where ``chosen_mask`` is True (for DRIFT, whose
            ``chosen_mask`` holds only the difference tokens, pass the whole ``y`` here).
        oal_targets_mask: (B, M) bool, True on real target ids (default: ``oal_targets != -100``
            for given ``oal_targets``, ``chosen_mask`` for the ``chosen_labels`` default).
        rejected_response_mask: (B, Tr) bool, the generated positions of ``y'`` the OAL max
            runs over (default: ``rejected_mask``; pass the full response mask for DRIFT).
        beta: the self-play inverse temperature (> 0).
        oal_weight: lambda, >= 0; 0 skips the OAL computation.

    Returns:
        :class:`DriftLossOutput`. ``oal_loss`` uses ``reduction="mean"`` (mean over the B rows).

    Raises:
        TypeError / ValueError naming the argument of this function (``oal_targets``, not the
        ``targets`` of :func:`oal_loss`), as :func:`token_logps`, :func:`dam_loss` and
        :func:`oal_loss` would for it.
    """
    oal_weight = _check_oal_weight(oal_weight)
    with _argument_names({"logits": "chosen_logits", "labels": "chosen_labels", "mask": "chosen_mask"}):
        chosen = token_logps(chosen_logits, chosen_labels, chosen_mask)
    with _argument_names({"logits": "rejected_logits", "labels": "rejected_labels", "mask": "rejected_mask"}):
        rejected = token_logps(rejected_logits, rejected_labels, rejected_mask)
    if chosen.shape[0] != rejected.shape[0]:
        raise ValueError(f"rejected_logits: batch size {rejected.shape[0]} differs from chosen_logits's {chosen.shape[0]}")
    sp = dam_loss(
        chosen, rejected, reference_chosen_logps, reference_rejected_logps, chosen_mask, rejected_mask, beta=beta
    )
    if oal_weight > 0:
        if oal_targets is None:
            targets, targets_name = chosen_labels, "chosen_labels"
            targets_mask = chosen_mask if oal_targets_mask is None else oal_targets_mask
        else:
            targets, targets_name, targets_mask = oal_targets, "oal_targets", oal_targets_mask
        positions = rejected_mask if rejected_response_mask is None else rejected_response_mask
        names = {
            "logits": "rejected_logits", "targets": targets_name,
            "targets_mask": "oal_targets_mask" if oal_targets_mask is not None else "chosen_mask",
            "logits_mask": "rejected_response_mask" if rejected_response_mask is not None else "rejected_mask",
        }
        with _argument_names(names):
            oal = oal_loss(rejected_logits, targets, logits_mask=positions, targets_mask=targets_mask)
        loss = sp.loss + oal_weight * oal.to(sp.loss.dtype)
    else:
        oal = torch.zeros((), dtype=sp.loss.dtype, device=sp.loss.device)
        loss = sp.loss
    return DriftLossOutput(loss, sp.loss, oal, sp.chosen_rewards, sp.rejected_rewards, sp.margins)


class DriftLoss(torch.nn.Module):
    """:func:`drift_loss` as a module holding ``beta`` and ``oal_weight``.

    ``forward`` takes the positional and keyword arguments of :func:`drift_loss` except
    ``beta`` and ``oal_weight`` and returns a :class:`DriftLossOutput`.
    """

    def __init__(self, beta: float = 0.1, oal_weight: float = 1.0) -> None:
        super().__init__()
        self.beta = _check_beta(beta)
        self.oal_weight = _check_oal_weight(oal_weight)

    def forward(self, *args: Any, **kwargs: Any) -> DriftLossOutput:
        """:func:`drift_loss` with this module's ``beta`` and ``oal_weight`` (its signature, less those two)."""
        for name in ("beta", "oal_weight"):
            if name in kwargs:
                raise TypeError(f"{name}: set on the module (DriftLoss({name}=...)), not per call")
        return drift_loss(*args, **kwargs, beta=self.beta, oal_weight=self.oal_weight)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, oal_weight={self.oal_weight}"


def _forward_signature() -> inspect.Signature:
    """``DriftLoss.forward``'s documented signature: ``self`` and :func:`drift_loss`'s arguments but ``beta``, ``oal_weight``."""
    sig = inspect.signature(drift_loss)
    own = [p for p in sig.parameters.values() if p.name not in ("beta", "oal_weight")]
    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sig.replace(parameters=[self_, *own], return_annotation=DriftLossOutput)


DriftLoss.forward.__signature__ = _forward_signature()
