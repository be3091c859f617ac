"""Mechanism diagnostics: does a stage move what DAM and OAL claim to move?

ROUGE on a few dozen held-out examples is a blunt instrument. These numbers test the
mechanism itself, teacher-forced and deterministic, on held-out pairs ``(x, y, y')`` where
``y`` is the reference response and ``y'`` the model's own generation:

- ``logp_difference``: mean log-prob of the reference's **difference tokens** (outside
  ``LCS(y, y')``, the tokens DAM trains on) under the model, teacher-forced on ``(x, y)``;
- ``logp_lcs``: the same over the reference's **LCS tokens** (SPIN spreads its push over both);
- ``vocab_recall``: the fraction of distinct reference ids that the generation contains
  anywhere (position-free, what OAL targets), and ``vocab_precision`` its counterpart;
- ``gamma``: mean ``|LCS(y, y')| / |y|``, as the trainer logs it for the training pairs.

Two layers: :func:`diagnostics_from_logps` is pure arithmetic on per-token log-probs, masks
and id lists (no model; the hand-computed tests and sharded callers use it), and
:func:`mechanism_diagnostics` runs one batched, ``torch.no_grad`` forward pass over the pairs
(:func:`reference_token_logps`, through :func:`drift.token_logps`) and then the former.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from drift._checks import is_integer_dtype, require_bool
from drift.ops.lcs import lcs_mask
from drift.ops.token_logps import token_logps

__all__ = [
    "DIAGNOSTIC_KEYS",
    "diagnostics_from_logps",
    "mechanism_diagnostics",
    "reference_token_logps",
    "vocabulary_overlap",
]

#: The keys of the dict both entry points return, in the order a table shows them.
DIAGNOSTIC_KEYS = (
    "logp_difference",
    "logp_lcs",
    "logp_reference",
    "vocab_recall",
    "vocab_precision",
    "gamma",
    "pairs",
    "difference_tokens",
    "lcs_tokens",
    "empty_generations",
)


def _vector(x: Any, name: str, what: str) -> Optional[torch.Tensor]:
    """``x`` (list, tuple, NumPy array, tensor) as a 1-D CPU tensor, or None when empty."""
    t = torch.as_tensor(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if t.numel() == 0:
        return None
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D {what}, got shape {tuple(t.shape)}")
    return t


def _ids(x: Any, name: str) -> List[int]:
    """A 1-D id sequence (list, tuple, NumPy array, tensor) as a list of Python ints."""
    t = _vector(x, name, "sequence of token ids")
    if t is None:
        return []
    if not is_integer_dtype(t.dtype):
        raise TypeError(f"{name}: expected integer token ids, got {t.dtype}")
    return [int(v) for v in t.tolist()]


def _flags(x: Any, name: str) -> List[bool]:
    """A 1-D bool mask as a list of Python bools."""
    t = _vector(x, name, "mask")
    if t is None:
        return []
    require_bool(t, name)
    return [bool(v) for v in t.tolist()]


def _values(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    if t.dim() > 1:
        raise ValueError(f"{name}: expected a 1-D sequence of log-probs, got shape {tuple(t.shape)}")
    return t.reshape(-1)


def _same_length(n: int, seqs: Sequence[Any], name: str) -> None:
    if len(seqs) != n:
        raise ValueError(f"{name}: expected {n} rows (one per pair), got {len(seqs)}")


def _mean(total: float, count: int) -> Optional[float]:
    return total / count if count else None


def vocabulary_overlap(
    reference: Sequence[int], generation: Sequence[int], ignore_ids: Iterable[int] = ()
) -> Tuple[Optional[float], Optional[float]]:
    """Position-free overlap of the distinct ids of one reference and one generation.

    Args:
        reference: ids of the reference response ``y`` (duplicates count once).
        generation: ids of the generated response ``y'`` (duplicates count once).
        ignore_ids: ids left out of both sets (e.g. EOS, which the trainer appends to ``y``
            and OAL leaves out of ``V(y)``).

    Returns:
        ``(recall, precision)``: ``|V(y) & V(y')| / |V(y)|`` and ``|V(y) & V(y')| / |V(y')|``,
        each ``None`` when its denominator set is empty (an empty generation has recall 0 and
        precision ``None``).
    """
    ignore = set(ignore_ids)
    ref = set(reference) - ignore
    gen = set(generation) - ignore
    common = len(ref & gen)
    recall = common / len(ref) if ref else None
    precision = common / len(gen) if gen else None
    return recall, precision


def diagnostics_from_logps(
    token_logps: Sequence[Any],
    difference_masks: Sequence[Any],
    references: Sequence[Sequence[int]],
    generations: Sequence[Sequence[int]],
    *,
    ignore_ids: Iterable[int] = (),
) -> Dict[str, Any]:
    """The mechanism diagnostics from already computed per-token log-probs (no model).

    Args:
        token_logps: per pair, the (|y_i|,) log-probs ``log pi(y_ij | x_i, y_i<j)`` of the
            reference's tokens (list, array or 1-D tensor; any float dtype, summed in float64).
        difference_masks: per pair, the (|y_i|,) bool mask of ``drift.lcs_mask(y, y').y``:
            True on difference tokens (outside the LCS), False on LCS tokens.
        references: per pair, the ids of ``y_i`` (the same tokens the log-probs score).
        generations: per pair, the ids of ``y'_i`` (may be empty).
        ignore_ids: ids left out of the vocabulary sets (recall/precision only; the log-prob
            means and gamma use every token of ``y``, as DAM and the trainer's gamma do).

    Returns:
        A dict with the keys of :data:`DIAGNOSTIC_KEYS`:

        - ``logp_difference``, ``logp_lcs``, ``logp_reference``: token-weighted means (pooled
          over all pairs) of the log-probs of the difference tokens, the LCS tokens and all
          tokens of ``y``; ``None`` when there is no such token;
        - ``vocab_recall``, ``vocab_precision``: means over pairs of
          :func:`vocabulary_overlap`, each over the pairs where it is defined (``None`` if none);
        - ``gamma``: mean over pairs with a non-empty ``y`` of (LCS tokens of ``y``) / ``|y|``;
        - ``pairs``, ``difference_tokens``, ``lcs_tokens``, ``empty_generations``: counts.

    Raises:
        ValueError: row counts differ, or a pair's log-probs, mask and ids differ in length.
        TypeError: a mask that is not bool, ids that are not integers.
    """
    n = len(references)
    for seqs, name in ((token_logps, "token_logps"), (difference_masks, "difference_masks"),
                       (generations, "generations")):
        _same_length(n, seqs, name)
    ignore = [int(v) for v in ignore_ids]
    diff_sum = lcs_sum = 0.0
    diff_count = lcs_count = 0
    gammas: List[float] = []
    recalls: List[float] = []
    precisions: List[float] = []
    empty = 0
    for i in range(n):
        ref = _ids(references[i], f"references[{i}]")
        gen = _ids(generations[i], f"generations[{i}]")
        mask = _flags(difference_masks[i], f"difference_masks[{i}]")
        lp = _values(token_logps[i], f"token_logps[{i}]")
        if not (len(mask) == len(ref) == lp.numel()):
            raise ValueError(
                f"pair {i}: references has {len(ref)} tokens, difference_masks {len(mask)}, "
                f"token_logps {lp.numel()}; expected one value per reference token"
            )
        m = torch.tensor(mask, dtype=torch.bool)
        diff_sum += float(lp[m].sum())
        lcs_sum += float(lp[~m].sum())
        k = int(m.sum())
        diff_count += k
        lcs_count += len(ref) - k
        if ref:
            gammas.append((len(ref) - k) / len(ref))
        if not gen:
            empty += 1
        recall, precision = vocabulary_overlap(ref, gen, ignore)
        if recall is not None:
            recalls.append(recall)
        if precision is not None:
            precisions.append(precision)
    return {
        "logp_difference": _mean(diff_sum, diff_count),
        "logp_lcs": _mean(lcs_sum, lcs_count),
        "logp_reference": _mean(diff_sum + lcs_sum, diff_count + lcs_count),
        "vocab_recall": _mean(math.fsum(recalls), len(recalls)),
        "vocab_precision": _mean(math.fsum(precisions), len(precisions)),
        "gamma": _mean(math.fsum(gammas), len(gammas)),
        "pairs": n,
        "difference_tokens": diff_count,
        "lcs_tokens": lcs_count,
        "empty_generations": empty,
    }


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def reference_token_logps(
    model,
    prompts: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
) -> List[torch.Tensor]:
    """Teacher-forced per-token log-probs of each reference under ``model``, one forward per batch.

    Args:
        model: a Hugging Face causal LM (``model(input_ids, attention_mask, position_ids,
            logits_to_keep)`` returning ``.logits``), on any device; it is put in eval mode for
            the call and its training flag restored after.
        prompts: per pair, the prompt ids ``x_i`` (non-empty; chat-formatted as the model
            saw them in training).
        references: per pair, the response ids ``y_i`` (may be empty).
        batch_size: pairs per forward pass.

    Returns:
        A list of (|y_i|,) float32 CPU tensors: ``log pi(y_ij | x_i, y_i<j)``. Prompts are
        left-padded and responses right-padded, with explicit position ids, so every
        response starts at one column and only response positions reach the LM head.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    _same_length(len(prompts), references, "references")
    xs = [_ids(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
    ys = [_ids(r, f"references[{i}]") for i, r in enumerate(references)]
    for i, x in enumerate(xs):
        if not x:
            raise ValueError(f"prompts[{i}]: empty prompt; the first response token needs a context")
    device = _model_device(model)
    out: List[torch.Tensor] = []
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(xs), batch_size):
                bx, by = xs[start: start + batch_size], ys[start: start + batch_size]
                p = max(len(x) for x in bx)
                r = max(max(len(y) for y in by), 1)
                ids = torch.zeros((len(bx), p + r), dtype=torch.long)
                attn = torch.zeros((len(bx), p + r), dtype=torch.long)
                for j, (x, y) in enumerate(zip(bx, by)):
                    ids[j, p - len(x): p] = torch.tensor(x, dtype=torch.long)
                    ids[j, p: p + len(y)] = torch.tensor(y, dtype=torch.long)
                    attn[j, p - len(x): p + len(y)] = 1
                pos = (attn.cumsum(-1) - 1).clamp(min=0)
                labels = ids[:, p:]
                valid = attn[:, p:].bool()
                # Position p-1+j scores response token j; the last column predicts nothing.
                logits = model(input_ids=ids[:, :-1].to(device), attention_mask=attn[:, :-1].to(device),
                               position_ids=pos[:, :-1].to(device), logits_to_keep=r, use_cache=False).logits
                lp = token_logps(logits, labels.to(device), valid.to(device)).float().cpu()
                out += [lp[j, : len(y)].clone() for j, y in enumerate(by)]
    finally:
        model.train(was_training)
    return out


def mechanism_diagnostics(
    model,
    prompts: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    generations: Sequence[Sequence[int]],
    difference_masks: Optional[Sequence[Any]] = None,
    *,
    ignore_ids: Iterable[int] = (),
    batch_size: int = 8,
) -> Dict[str, Any]:
    """The mechanism diagnostics of ``model`` on held-out pairs (teacher-forced, deterministic).

    Args:
        model: a Hugging Face causal LM (see :func:`reference_token_logps`).
        prompts: per pair, the prompt ids ``x_i``.
        references: per pair, the reference ids ``y_i`` (as trained on: with the trailing EOS
            the trainer appends).
        generations: per pair, the ids of the generation ``y'_i`` to compare against (the
            stage's own greedy held-out generations, cut after EOS).
        difference_masks: per pair, the (|y_i|,) bool reference-side mask of
            ``drift.lcs_mask(y, y').y``; ``None`` computes it here.
        ignore_ids: ids left out of recall/precision (pass ``[eos_token_id]`` to match OAL's
            ``V(y)``).
        batch_size: pairs per forward pass.

    Returns:
        The dict of :func:`diagnostics_from_logps` (keys :data:`DIAGNOSTIC_KEYS`), plus
        ``seconds`` (wall time of the call).

    One forward pass over ``(x_i, y_i)`` per batch, under ``torch.no_grad`` and eval mode; no
    sampling, so equal inputs give equal numbers.
    """
    import time

    t0 = time.perf_counter()
    n = len(references)
    _same_length(n, prompts, "prompts")
    _same_length(n, generations, "generations")
    if difference_masks is None:
        ys = [_ids(r, f"references[{i}]") for i, r in enumerate(references)]
        yps = [_ids(g, f"generations[{i}]") for i, g in enumerate(generations)]
        difference_masks = lcs_mask(ys, yps).y if n else []
    logps = reference_token_logps(model, prompts, references, batch_size=batch_size)
    out = diagnostics_from_logps(logps, difference_masks, references, generations, ignore_ids=ignore_ids)
    out["seconds"] = time.perf_counter() - t0
    return out
