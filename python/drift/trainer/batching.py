"""Batches: left-padded prompts, right-padded responses, so every response starts at column P.

SFT batches are (prompt, y) rows; a self-play batch holds the chosen rows (y) then the rejected
rows (y'), one forward for both, with the token masks the method's sums run over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from drift.trainer.methods import method as method_traits
from drift.trainer.examples import Example
from drift.trainer.results import Generations, Masks, Reference


@dataclass
class Batch:
    input_ids: torch.Tensor  # (N, P + R)
    attention_mask: torch.Tensor  # (N, P + R)
    position_ids: torch.Tensor  # (N, P + R)
    labels: torch.Tensor  # (N, R) response ids (pad after each response's end)
    response_mask: torch.Tensor  # (N, R) bool, True on real response tokens (from lengths)


def collate(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
            device: torch.device) -> Batch:
    """Pack N (prompt, response) id lists; masks come from lengths (pad may equal EOS)."""
    n = len(prompts)
    p = max(len(x) for x in prompts)
    r = max(max(len(y) for y in responses), 1)
    ids = torch.full((n, p + r), pad_id, dtype=torch.long)
    attn = torch.zeros((n, p + r), dtype=torch.long)
    for i, (x, y) in enumerate(zip(prompts, responses)):
        ids[i, p - len(x): p] = torch.tensor(x, dtype=torch.long)
        ids[i, p: p + len(y)] = torch.tensor(y, dtype=torch.long)
        attn[i, p - len(x): p + len(y)] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids.to(device), attn.to(device), pos.to(device), ids[:, p:].to(device),
                 attn[:, p:].bool().to(device))


def pad_masks(masks: Sequence[Sequence[bool]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros((len(masks), width), dtype=torch.bool)
    for i, m in enumerate(masks):
        out[i, : len(m)] = torch.as_tensor(list(m), dtype=torch.bool)
    return out.to(device)


def response_logits(model, batch: Batch) -> torch.Tensor:
    """(N, R, V) logits where ``[:, j]`` scores response token j: only response positions reach lm_head."""
    r = batch.labels.shape[1]
    out = model(input_ids=batch.input_ids[:, :-1], attention_mask=batch.attention_mask[:, :-1],
                position_ids=batch.position_ids[:, :-1], logits_to_keep=r, use_cache=False)
    return out.logits


@dataclass
class SelfPlayExample:
    """One training :class:`~drift.trainer.examples.Example` with its opponent answer y', the token masks the
    method's sums run over, and the reference log-prob sums: everything the self-play loss needs."""

    prompt_ids: List[int]
    chosen_ids: List[int]
    rejected_ids: List[int]
    chosen_mask: List[bool]
    rejected_mask: List[bool]
    reference_chosen: float = 0.0
    reference_rejected: float = 0.0


def self_play_masks(method: str, example: Example, generated: List[int], masks: Masks, i: int):
    """The (chosen, rejected) token masks the self-play sums of pair ``i`` run over for ``method``."""
    if method_traits(method).dam:
        return masks.chosen[i], masks.rejected[i]
    return [True] * len(example.response_ids), [True] * len(generated)


def self_play_batch(items: Sequence[SelfPlayExample], pad_id: int, device: torch.device):
    """Chosen rows then rejected rows in one batch (one forward); masks padded to R."""
    prompts = [it.prompt_ids for it in items] * 2
    responses = [it.chosen_ids for it in items] + [it.rejected_ids for it in items]
    b = collate(prompts, responses, pad_id, device)
    r = b.labels.shape[1]
    return b, pad_masks([it.chosen_mask for it in items], r, device), pad_masks([it.rejected_mask for it in items], r, device)


def self_play_examples(examples: List[Example], gens: Generations, masks: Masks, ref: Optional[Reference],
                       method: str) -> List[SelfPlayExample]:
    """The self-play pairs of ``examples`` and their generations, with ``method``'s masks and the reference sums
    (0 until ``ref`` is known: the reference pass itself runs on these pairs)."""
    out = []
    for i, (p, g) in enumerate(zip(examples, gens.ids)):
        cm, rm = self_play_masks(method, p, g, masks, i)
        it = SelfPlayExample(p.prompt_ids, p.response_ids, g, list(cm), list(rm))
        if ref is not None:
            it.reference_chosen, it.reference_rejected = ref.chosen[i], ref.rejected[i]
        out.append(it)
    return out
