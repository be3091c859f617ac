"""Plain-Python / naive-PyTorch reference implementations, written from METHOD.md.

Slow on purpose: every native kernel is tested against these (and benchmarks time them).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple


def lcs_table(a: Sequence[int], b: Sequence[int]) -> List[List[int]]:
    """Full LCS DP table: ``table[i][j]`` = LCS length of ``a[:i]`` and ``b[:j]``."""
    m, n = len(a), len(b)
    table = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(1, m + 1):
        ai = a[i - 1]
        row, prev = table[i], table[i - 1]
        for j in range(1, n + 1):
            if ai == b[j - 1]:
                row[j] = prev[j - 1] + 1
            else:
                row[j] = row[j - 1] if row[j - 1] > prev[j] else prev[j]
    return table


def lcs_mask_pair(a: Sequence[int], b: Sequence[int]) -> Tuple[List[bool], List[bool], int]:
    """Difference masks (True = outside the LCS) of one pair and the LCS length.

    Tie-break, from (len(a), len(b)) backwards: equal tokens are matched; otherwise drop
    ``a[i-1]`` if ``L(i-1, j) == L(i, j)``, else drop ``b[j-1]`` (the rule of drift.lcs_mask).
    """
    a, b = [int(t) for t in a], [int(t) for t in b]
    table = lcs_table(a, b)
    diff_a, diff_b = [True] * len(a), [True] * len(b)
    i, j = len(a), len(b)
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1]:
            diff_a[i - 1] = diff_b[j - 1] = False
            i -= 1
            j -= 1
        elif table[i - 1][j] == table[i][j]:
            i -= 1
        else:
            j -= 1
    return diff_a, diff_b, table[len(a)][len(b)]


def lcs_mask(y: Any, y_prime: Any, y_lengths: Any = None, y_prime_lengths: Any = None, *, pad_id: Any = None):
    """Reference of :func:`drift.lcs_mask` for (B, M)/(B, N) integer arrays or tensors.

    Returns ``(mask_y, mask_y_prime, lcs_length)`` as nested Python lists of the padded
    shapes (False on padding). Lengths: explicit, else trailing ``pad_id`` run, else full.
    """
    y_rows, yp_rows = _rows(y), _rows(y_prime)
    ml, nl = _row_lengths(y_rows, y_lengths, pad_id), _row_lengths(yp_rows, y_prime_lengths, pad_id)
    masks_y, masks_yp, lengths = [], [], []
    for a, b, la, lb in zip(y_rows, yp_rows, ml, nl):
        da, db, k = lcs_mask_pair(a[:la], b[:lb])
        masks_y.append(da + [False] * (len(a) - la))
        masks_yp.append(db + [False] * (len(b) - lb))
        lengths.append(k)
    return masks_y, masks_yp, lengths


def _rows(x: Any) -> List[List[int]]:
    if hasattr(x, "tolist"):
        x = x.tolist()
    return [[int(t) for t in row] for row in x]


def _row_lengths(rows: List[List[int]], lengths: Any, pad_id: Any) -> List[int]:
    if lengths is not None:
        return [int(v) for v in (lengths.tolist() if hasattr(lengths, "tolist") else lengths)]
    out = []
    for row in rows:
        k = len(row)
        if pad_id is not None:
            while k > 0 and row[k - 1] == pad_id:
                k -= 1
        out.append(k)
    return out


# ---- losses (METHOD.md sections 0-3): naive PyTorch, full log-softmax, explicit loops -------


def _compute_dtype(logits: Any) -> Any:
    import torch

    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _not_ignored(ids: Any) -> Any:
    """The default mask of ``ids``: True where the id is not the number -100 (compared as int64: uint8 156 is an
    id, not -100 wrapped)."""
    import torch

    return ids.to(torch.int64) != -100


def token_logps(logits: Any, labels: Any, mask: Any = None) -> Any:
    """Reference of :func:`drift.token_logps`: the full (B, T, V) log-softmax, then a gather.

    Computes in float64 for float64 logits, float32 otherwise; 0 at masked positions
    (``mask`` False, or ``labels`` equal to the number -100 when ``mask`` is None).
    """
    import torch

    if mask is None:
        mask = _not_ignored(labels)
    logp = logits.to(_compute_dtype(logits)).log_softmax(dim=-1)
    picked = logp.gather(-1, torch.where(mask, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, picked, torch.zeros((), dtype=picked.dtype))


def _first_argmax(values: List[float]) -> int:
    """Index of the maximum, the first on ties; the first NaN if any (as torch.max)."""
    best = 0
    for j, x in enumerate(values):
        if x != x:
            return j
        if x > values[best]:
            best = j
    return best


def oal_loss(logits: Any, targets: Any, *, logits_mask: Any = None, targets_mask: Any = None, reduction: str = "mean") -> Any:
    """Reference of :func:`drift.oal_loss`, straight from METHOD.md section 2.

    Per row b: ``-sum_{v in set(valid targets)} log p_max(v)`` with
    ``p_max(v) = max_{t valid} softmax(logits[b, t])[v]``, the max taken explicitly in
    Python (first position on ties) so that the gradient flows through that single
    position. ``reduction``: "mean" (over the B rows), "sum" or "none".
    """
    import torch

    batch, seq, _ = logits.shape
    if logits_mask is None:
        logits_mask = torch.ones((batch, seq), dtype=torch.bool)
    if targets_mask is None:
        targets_mask = _not_ignored(targets)
    dtype = _compute_dtype(logits)
    rows = []
    for b in range(batch):
        positions = [t for t in range(seq) if bool(logits_mask[b, t])]
        ids = sorted({int(v) for v, ok in zip(targets[b].tolist(), targets_mask[b].tolist()) if ok})
        row = torch.zeros((), dtype=dtype)
        if positions and ids:
            logp = logits[b].to(dtype).log_softmax(dim=-1)
            for v in ids:
                column = [float(logp[t, v].detach()) for t in positions]
                row = row - logp[positions[_first_argmax(column)], v]
        rows.append(row)
    out = torch.stack(rows) if rows else torch.zeros((0,), dtype=dtype)
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    return out.sum() / max(batch, 1)


def self_play_terms(h: Any, beta: float, loss_type: str = "sigmoid") -> Any:
    """Per-pair self-play loss of the log-ratio difference ``h`` (METHOD.md section 0), written out.

    sigmoid (SPIN / DPO): ``log(1 + exp(-beta h))`` in its stable form; hinge (SLiC):
    ``max(0, 1 - beta h)``; ipo (IPO): ``(h - 1 / (2 beta))^2``.
    """
    import torch

    z = beta * h
    if loss_type == "sigmoid":
        return torch.clamp(-z, min=0) + torch.log1p(torch.exp(-z.abs()))
    if loss_type == "hinge":
        return torch.clamp(1 - z, min=0)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"loss_type: expected sigmoid, hinge or ipo, got {loss_type!r}")


def spin_loss(policy_chosen_logps: Any, policy_rejected_logps: Any, reference_chosen_logps: Any,
              reference_rejected_logps: Any, *, beta: float = 0.1, loss_type: str = "sigmoid") -> Tuple[Any, Any, Any, Any]:
    """Reference of :func:`drift.spin_loss`: ``(loss, chosen_rewards, rejected_rewards, margins)``.

    The per-pair loss of :func:`self_play_terms` of ``h = (pc - rc) - (pr - rr)``, averaged
    over the batch; an empty batch gives 0 (the documented result of drift.spin_loss).
    """
    h = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    terms = self_play_terms(h, beta, loss_type)
    loss = terms.sum() / max(terms.numel(), 1)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected = beta * (policy_rejected_logps - reference_rejected_logps)
    return loss, chosen.detach(), rejected.detach(), (chosen - rejected).detach()


def dam_loss(policy_chosen_token_logps: Any, policy_rejected_token_logps: Any, reference_chosen_logps: Any,
             reference_rejected_logps: Any, chosen_mask: Any, rejected_mask: Any, *, beta: float = 0.1,
             loss_type: str = "sigmoid"):
    """Reference of :func:`drift.dam_loss`: the SPIN loss of the masked per-token sums (float64)."""
    import torch

    pc = (policy_chosen_token_logps.to(torch.float64) * chosen_mask).sum(-1)
    pr = (policy_rejected_token_logps.to(torch.float64) * rejected_mask).sum(-1)
    return spin_loss(pc, pr, reference_chosen_logps, reference_rejected_logps, beta=beta, loss_type=loss_type)


def drift_loss(chosen_logits: Any, chosen_labels: Any, chosen_mask: Any, rejected_logits: Any, rejected_labels: Any,
               rejected_mask: Any, reference_chosen_logps: Any, reference_rejected_logps: Any, *,
               chosen_response_mask: Any = None, rejected_response_mask: Any = None, oal_targets: Any = None,
               oal_targets_mask: Any = None, beta: float = 0.1, oal_weight: float = 1.0, loss_type: str = "sigmoid"):
    """Reference of :func:`drift.drift_loss`: ``(loss, self_play_loss, oal_loss, chosen_rewards,
    rejected_rewards, margins)`` from the naive pieces above.

    OAL as METHOD.md section 2 defines it: ``V(y)`` = the chosen labels under
    ``chosen_response_mask`` (default: every label that is not -100) or the given
    ``oal_targets``; the max over the positions of ``rejected_response_mask`` (default: every
    rejected label that is not -100).
    """
    import torch

    pc = token_logps(chosen_logits, chosen_labels, chosen_mask)
    pr = token_logps(rejected_logits, rejected_labels, rejected_mask)
    sp, cr, rr, mg = dam_loss(pc, pr, reference_chosen_logps, reference_rejected_logps, chosen_mask, rejected_mask,
                              beta=beta, loss_type=loss_type)
    if oal_weight > 0:
        if oal_targets is None:  # every real token of y
            oal_targets = chosen_labels
            oal_targets_mask = _not_ignored(chosen_labels) if chosen_response_mask is None else chosen_response_mask
        positions = _not_ignored(rejected_labels) if rejected_response_mask is None else rejected_response_mask
        oal = oal_loss(rejected_logits, oal_targets, logits_mask=positions, targets_mask=oal_targets_mask)
    else:
        oal = torch.zeros((), dtype=sp.dtype)
    return sp + oal_weight * oal, sp, oal, cr, rr, mg
