"""The DRIFT training losses (METHOD.md sections 0-3), on top of the fused ops in ``drift.ops``.

- :func:`token_logps` - per-token log-probs of the labels (fused selective log-softmax);
- :func:`oal_loss` - the occurrence-aware loss (fused, METHOD.md section 2);
- :func:`spin_loss`, :func:`dam_loss` - the self-play losses on sequence sums (``loss_type``
  sigmoid, hinge or ipo; METHOD.md section 0);
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
from drift.ops._logits import not_ignored
from drift.ops.oal import oal_loss
from drift.ops.token_logps import token_logps

__all__ = [
    "LOSS_TYPES",
    "DriftLoss",
    "DriftLossOutput",
    "SelfPlayLoss",
    "dam_loss",
    "drift_loss",
    "oal_loss",
    "spin_loss",
    "token_logps",
]


#: The self-play losses of ``h = (policy - reference)(y) - (policy - reference)(y')`` (METHOD.md section 0).
LOSS_TYPES = ("sigmoid", "hinge", "ipo")


class SelfPlayLoss(NamedTuple):
    """Result of :func:`spin_loss` / :func:`dam_loss`.

    ``loss``: scalar, mean over the batch of the per-pair loss of ``loss_type`` (differentiable;
    for the default "sigmoid", ``-logsigmoid(margins)``);
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


def _check_loss_type(loss_type: object) -> str:
    if not isinstance(loss_type, str):
        raise TypeError(f"loss_type: expected a str, one of {', '.join(LOSS_TYPES)}, got {type(loss_type).__name__}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type: expected one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    return loss_type


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
    loss_type: str = "sigmoid",
) -> SelfPlayLoss:
    """The self-play loss on sequence log-prob sums, SPIN's by default (METHOD.md section 0).

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) floating log-probs of the chosen
            (ground-truth ``y``) and rejected (generated ``y'``) responses under the policy.
        reference_chosen_logps, reference_rejected_logps: (B,) the same under the reference
            (the opponent ``pi_t``); treated as constants.
        beta: the inverse temperature (> 0).
        loss_type: the per-pair loss of ``h = (pc - rc) - (pr - rr)``: "sigmoid" (SPIN / DPO,
            ``-logsigmoid(beta*h)``, the default), "hinge" (SLiC, ``relu(1 - beta*h)``) or
            "ipo" (IPO, ``(h - 1/(2*beta))**2``).

    Returns:
        :class:`SelfPlayLoss`: ``loss`` = mean over the batch of the per-pair loss (computed in
        the promoted dtype of the four inputs, at least float32), rewards
        ``beta*(policy - reference)`` and margins, detached (the same for every ``loss_type``).
        An empty batch (B = 0) gives ``loss = 0`` (a sum over no pairs; no gradient), not the
        NaN of an empty mean.

    Raises:
        TypeError: non-tensor or non-floating inputs, a non-real ``beta``, a non-str ``loss_type``.
        ValueError: wrong ranks, shapes or devices, ``beta`` not finite and > 0, an unknown
            ``loss_type``.
    """
    beta = _check_beta(beta)
    loss_type = _check_loss_type(loss_type)
    pc = _check_sequence_logps(policy_chosen_logps, "policy_chosen_logps", None, "")
    pr = _check_sequence_logps(policy_rejected_logps, "policy_rejected_logps", pc, "policy_chosen_logps")
    rc = _check_sequence_logps(reference_chosen_logps, "reference_chosen_logps", pc, "policy_chosen_logps")
    rr = _check_sequence_logps(reference_rejected_logps, "reference_rejected_logps", pc, "policy_chosen_logps")
    dtype = torch.float32
    for x in (pc, pr, rc, rr):
        dtype = torch.promote_types(dtype, x.dtype)
    chosen = pc.to(dtype) - rc.detach().to(dtype)
    rejected = pr.to(dtype) - rr.detach().to(dtype)
    h = chosen - rejected
    if loss_type == "sigmoid":
        per_pair = -F.logsigmoid(beta * h)
    elif loss_type == "hinge":
        per_pair = torch.relu(1 - beta * h)
    else:  # ipo
        per_pair = (h - 1 / (2 * beta)) ** 2
    loss = per_pair.mean() if per_pair.numel() else per_pair.sum()
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
    loss_type: str = "sigmoid",
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
        loss_type: "sigmoid" (default), "hinge" or "ipo", as in :func:`spin_loss`.

    Returns:
        :class:`SelfPlayLoss` of :func:`spin_loss` applied to
        ``sum_t mask * token_logps`` on each side (summed in at least float32, so bf16/fp16
        token log-probs lose nothing to the sum). A pair with both masks empty has margin 0:
        it contributes ``log 2`` (sigmoid), 1 (hinge) or ``1/(4*beta**2)`` (ipo) to the mean and
        no gradient.
    """
    pc = _masked_sum(policy_chosen_token_logps, chosen_mask, "policy_chosen_token_logps", "chosen_mask", None)
    batch = pc.shape[0]
    pr = _masked_sum(policy_rejected_token_logps, rejected_mask, "policy_rejected_token_logps", "rejected_mask", batch)
    require_same_device(pr, "policy_rejected_token_logps", pc, "policy_chosen_token_logps")
    return spin_loss(pc, pr, reference_chosen_logps, reference_rejected_logps, beta=beta, loss_type=loss_type)


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
    chosen_response_mask: Optional[torch.Tensor] = None,
    rejected_response_mask: Optional[torch.Tensor] = None,
    oal_targets: Optional[torch.Tensor] = None,
    oal_targets_mask: Optional[torch.Tensor] = None,
    beta: float = 0.1,
    oal_weight: float = 1.0,
    loss_type: str = "sigmoid",
) -> DriftLossOutput:
    """The DRIFT objective ``L_DAM + oal_weight * L_OAL`` from the policy's logits (METHOD.md section 3).

    By default the OAL term is the paper's (METHOD.md section 2): ``V(y)`` is every distinct
    real token of ``y`` and the max runs over every generated position of ``y'``, whatever the
    self-play masks. Changed default: without ``oal_targets``, ``V(y)`` used to be the
    ``chosen_labels`` under ``chosen_mask`` (for DRIFT only the difference tokens) and the max
    ran over ``rejected_mask``; both now cover the whole responses (``chosen_response_mask``,
    ``rejected_response_mask``).

    Args:
        chosen_logits: (B, Tc, V) policy logits over ``(x, y)``, aligned so that
            ``chosen_logits[b, t]`` scores ``chosen_labels[b, t]``.
        chosen_labels: (B, Tc) integer ids of ``y``; -100 at padding unless
            ``chosen_response_mask`` says where ``y`` is (then anything outside it and
            ``chosen_mask``).
        chosen_mask: (B, Tc) bool, the tokens of ``y`` that enter the self-play sum (the DAM
            difference mask for DRIFT; the full response mask gives SPIN).
        rejected_logits, rejected_labels, rejected_mask: the same for ``y'`` (B, Tr, V).
        reference_chosen_logps, reference_rejected_logps: (B,) the reference's masked sums.
        chosen_response_mask: (B, Tc) bool, True on every real token of ``y``: ``V(y)`` is the
            set of ``chosen_labels`` there (default: ``chosen_labels != -100``).
        rejected_response_mask: (B, Tr) bool, the generated positions of ``y'`` the OAL max
            runs over (default: ``rejected_labels != -100``).
        oal_targets: (B, M) ids whose distinct valid ids form ``V(y)`` instead of
            ``chosen_labels`` (``chosen_response_mask`` must then be None).
        oal_targets_mask: (B, M) bool, True on the real ids of ``oal_targets`` (default:
            ``oal_targets != -100``); only with ``oal_targets``.
        beta: the self-play inverse temperature (> 0).
        oal_weight: lambda, >= 0; 0 skips the OAL computation.
        loss_type: the self-play loss, "sigmoid" (default), "hinge" or "ipo" (:func:`spin_loss`).

    Returns:
        :class:`DriftLossOutput`. ``oal_loss`` uses ``reduction="mean"`` (mean over the B rows).

    Raises:
        TypeError / ValueError naming the argument of this function (``oal_targets``, not the
        ``targets`` of :func:`oal_loss`), as :func:`token_logps`, :func:`dam_loss` and
        :func:`oal_loss` would for it; ValueError for ``oal_targets`` together with
        ``chosen_response_mask``, or ``oal_targets_mask`` without ``oal_targets``.
    """
    oal_weight = _check_oal_weight(oal_weight)
    loss_type = _check_loss_type(loss_type)
    if oal_targets is None and oal_targets_mask is not None:
        raise ValueError("oal_targets_mask: given without oal_targets; V(y) from chosen_labels takes chosen_response_mask")
    if oal_targets is not None and chosen_response_mask is not None:
        raise ValueError("chosen_response_mask: pass either it (V(y) from chosen_labels) or oal_targets, not both")
    with _argument_names({"logits": "chosen_logits", "labels": "chosen_labels", "mask": "chosen_mask"}):
        chosen = token_logps(chosen_logits, chosen_labels, chosen_mask)
    with _argument_names({"logits": "rejected_logits", "labels": "rejected_labels", "mask": "rejected_mask"}):
        rejected = token_logps(rejected_logits, rejected_labels, rejected_mask)
    if chosen.shape[0] != rejected.shape[0]:
        raise ValueError(f"rejected_logits: batch size {rejected.shape[0]} differs from chosen_logits's {chosen.shape[0]}")
    sp = dam_loss(
        chosen, rejected, reference_chosen_logps, reference_rejected_logps, chosen_mask, rejected_mask,
        beta=beta, loss_type=loss_type,
    )
    if oal_weight > 0:
        names = {"logits": "rejected_logits"}
        if oal_targets is None:
            targets, names["targets"] = chosen_labels, "chosen_labels"
            if chosen_response_mask is None:
                targets_mask, names["targets_mask"] = not_ignored(chosen_labels), "chosen_labels"
            else:
                targets_mask, names["targets_mask"] = chosen_response_mask, "chosen_response_mask"
        else:
            targets, names["targets"] = oal_targets, "oal_targets"
            targets_mask, names["targets_mask"] = oal_targets_mask, "oal_targets_mask"
        if rejected_response_mask is None:
            positions, names["logits_mask"] = not_ignored(rejected_labels), "rejected_labels"
        else:
            positions, names["logits_mask"] = rejected_response_mask, "rejected_response_mask"
        with _argument_names(names):
            oal = oal_loss(rejected_logits, targets, logits_mask=positions, targets_mask=targets_mask)
        loss = sp.loss + oal_weight * oal.to(sp.loss.dtype)
    else:
        oal = torch.zeros((), dtype=sp.loss.dtype, device=sp.loss.device)
        loss = sp.loss
    return DriftLossOutput(loss, sp.loss, oal, sp.chosen_rewards, sp.rejected_rewards, sp.margins)


class DriftLoss(torch.nn.Module):
    """:func:`drift_loss` as a module holding ``beta``, ``oal_weight`` and ``loss_type``.

    ``forward`` takes the positional and keyword arguments of :func:`drift_loss` except
    those three and returns a :class:`DriftLossOutput`.
    """

    def __init__(self, beta: float = 0.1, oal_weight: float = 1.0, loss_type: str = "sigmoid") -> None:
        super().__init__()
        self.beta = _check_beta(beta)
        self.oal_weight = _check_oal_weight(oal_weight)
        self.loss_type = _check_loss_type(loss_type)

    def forward(self, *args: Any, **kwargs: Any) -> DriftLossOutput:
        """:func:`drift_loss` with this module's ``beta``, ``oal_weight`` and ``loss_type`` (its signature, less those)."""
        for name in _MODULE_SETTINGS:
            if name in kwargs:
                raise TypeError(f"{name}: set on the module (DriftLoss({name}=...)), not per call")
        return drift_loss(*args, **kwargs, beta=self.beta, oal_weight=self.oal_weight, loss_type=self.loss_type)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, oal_weight={self.oal_weight}, loss_type={self.loss_type!r}"


#: The :func:`drift_loss` arguments a :class:`DriftLoss` holds instead of taking them per call.
_MODULE_SETTINGS = ("beta", "oal_weight", "loss_type")


def _forward_signature() -> inspect.Signature:
    """``DriftLoss.forward``'s documented signature: ``self`` and :func:`drift_loss`'s arguments but the module's settings."""
    sig = inspect.signature(drift_loss)
    own = [p for p in sig.parameters.values() if p.name not in _MODULE_SETTINGS]
    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sig.replace(parameters=[self_, *own], return_annotation=DriftLossOutput)


DriftLoss.forward.__signature__ = _forward_signature()
