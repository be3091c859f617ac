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
