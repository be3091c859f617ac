"""drift.lcs_mask against the plain-Python DP reference (drift.reference), on every backend."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import drift
from drift import reference

CUDA = torch.cuda.is_available() and drift.cuda_available()
cuda_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and drift's CUDA kernels")

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, cuda_only])]


def pad_batch(rows, width=None, pad=0, dtype=torch.int64):
    width = max([len(r) for r in rows] + [0]) if width is None else width
    out = torch.full((len(rows), width), pad, dtype=dtype)
    for k, r in enumerate(rows):
        out[k, : len(r)] = torch.tensor(r, dtype=dtype)
    return out, torch.tensor([len(r) for r in rows], dtype=torch.int64)


def assert_matches_reference(y_rows, yp_rows, device="cpu", dtype=torch.int64, extra_width=0):
    y, yl = pad_batch(y_rows, dtype=dtype)
    yp, ypl = pad_batch(yp_rows, dtype=dtype)
    if extra_width:
        y = torch.cat([y, torch.zeros(y.shape[0], extra_width, dtype=dtype)], 1)
    out = drift.lcs_mask(y.to(device), yp.to(device), yl.to(device), ypl.to(device))
    assert out.y.device.type == device and out.y.dtype == torch.bool and out.y.shape == y.shape
    assert out.y_prime.shape == yp.shape and out.lcs_length.dtype == torch.int64
    ref_y, ref_yp, ref_len = reference.lcs_mask(y, yp, yl, ypl)
    assert out.y.cpu().tolist() == ref_y
    assert out.y_prime.cpu().tolist() == ref_yp
    assert out.lcs_length.cpu().tolist() == ref_len
    return out


def assert_kept_tokens_form_lcs(out, y_rows, yp_rows):
    """The tokens outside the masks are one common subsequence of length lcs_length."""
    for k, (a, b) in enumerate(zip(y_rows, yp_rows)):
        my = out.y[k].cpu().tolist()[: len(a)]
        myp = out.y_prime[k].cpu().tolist()[: len(b)]
        kept_a = [t for t, d in zip(a, my) if not d]
        kept_b = [t for t, d in zip(b, myp) if not d]
        assert kept_a == kept_b
        assert len(kept_a) == int(out.lcs_length[k])
        assert len(kept_a) == reference.lcs_table(a, b)[len(a)][len(b)]


# --- property-based agreement -------------------------------------------------------------

@st.composite
def pair_batches(draw, max_len=300):
    vocab = draw(st.sampled_from([2, 3, 5, 17, 1000, 150000]))
    batch = draw(st.integers(1, 4))
    ys, yps = [], []
    for _ in range(batch):
        m = draw(st.integers(0, max_len))
        a = draw(st.lists(st.integers(0, vocab - 1), min_size=m, max_size=m))
        # y' derived from y by random edits, so long common subsequences are common
        b = []
        for t in a:
            op = draw(st.integers(0, 9))
            if op < 6:
                b.append(t)
            elif op < 8:
                b.append(draw(st.integers(0, vocab - 1)))
            elif op == 8:
                b.extend([t, draw(st.integers(0, vocab - 1))])
        if draw(st.booleans()):
            b = draw(st.lists(st.integers(0, vocab - 1), max_size=max_len))
        ys.append(a)
        yps.append(b[:max_len])
    return ys, yps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pair_batches(), st.sampled_from([torch.int32, torch.int64]))
def test_hypothesis_matches_reference_cpu(batch, dtype):
    ys, yps = batch
    out = assert_matches_reference(ys, yps, "cpu", dtype)
    assert_kept_tokens_form_lcs(out, ys, yps)


@cuda_only
@pytest.mark.cuda
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pair_batches(), st.sampled_from([torch.int32, torch.int64]))
def test_hypothesis_matches_reference_cuda(batch, dtype):
    ys, yps = batch
    assert_matches_reference(ys, yps, "cuda", dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_ten_thousand_random_pairs_zero_mismatches(device):
    """>= 10,000 random pairs (small alphabets stress the tie-break) agree exactly."""
    rng = random.Random(1234)
    ys, yps = [], []
    for _ in range(10_000):
        vocab = rng.choice([2, 4, 30, 150000])
        m, n = rng.randint(0, 40), rng.randint(0, 40)
        ys.append([rng.randrange(vocab) for _ in range(m)])
        yps.append([rng.randrange(vocab) for _ in range(n)])
    y, yl = pad_batch(ys)
    yp, ypl = pad_batch(yps)
    out = drift.lcs_mask(y.to(device), yp.to(device), yl.to(device), ypl.to(device))
    mismatches = 0
    got_y, got_yp, got_len = out.y.cpu().tolist(), out.y_prime.cpu().tolist(), out.lcs_length.cpu().tolist()
    for k, (a, b) in enumerate(zip(ys, yps)):
        da, db, length = reference.lcs_mask_pair(a, b)
        if got_y[k][: len(a)] != da or got_yp[k][: len(b)] != db or got_len[k] != length:
            mismatches += 1
        assert not any(got_y[k][len(a):]) and not any(got_yp[k][len(b):])
    assert mismatches == 0


@pytest.mark.parametrize("device", DEVICES)
def test_word_boundaries(device):
    """Lengths around multiples of 64 (and of 32 words on CUDA) exercise the carries."""
    rng = random.Random(7)
    ys, yps = [], []
    for m in [1, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257]:
        a = [rng.randrange(3) for _ in range(m)]
        ys.append(a)
        yps.append([rng.randrange(3) for _ in range(rng.randint(1, 300))])
    assert_matches_reference(ys, yps, device)


@pytest.mark.parametrize("device", DEVICES)
def test_carry_chain_across_many_words(device):
    """y of 2100 tokens (33 words: crosses one CUDA warp) against a y' that forces long carries."""
    rng = random.Random(11)
    a = [rng.randrange(2) for _ in range(2100)]
    b = [1 - t if rng.random() < 0.3 else t for t in a[::2]] + [0] * 40 + [1] * 40
    out = assert_matches_reference([a], [b], device)
    assert_kept_tokens_form_lcs(out, [a], [b])


# --- explicit edges ---------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_edges(device):
    cases = [
        ([], []),
        ([], [1, 2]),
        ([1, 2], []),
        ([5], [5]),
        ([5], [6]),
        ([1, 2, 3, 4], [1, 2, 3, 4]),
        ([1, 2, 3], [4, 5, 6]),
        ([7] * 50, [7] * 20),
    ]
    ys = [a for a, _ in cases]
    yps = [b for _, b in cases]
    out = assert_matches_reference(ys, yps, device)
    assert out.lcs_length.cpu().tolist() == [0, 0, 0, 1, 0, 4, 0, 20]
    assert not out.y[5].any() and not out.y_prime[5].any()  # identical -> nothing to train on
    assert out.y[6, :3].all() and out.y_prime[6, :3].all()  # disjoint -> everything differs
    assert_kept_tokens_form_lcs(out, ys, yps)


@pytest.mark.parametrize("device", DEVICES)
def test_all_padding_rows(device):
    y = torch.full((3, 5), 9, dtype=torch.int64, device=device)
    yp = torch.full((3, 4), 9, dtype=torch.int64, device=device)
    out = drift.lcs_mask(y, yp, pad_id=9)
    assert not out.y.any() and not out.y_prime.any()
    assert out.lcs_length.tolist() == [0, 0, 0]


@pytest.mark.parametrize("device", DEVICES)
def test_documented_tie_break(device):
    # y = [1, 2], y' = [2, 1]: two LCSs of length 1. At the ends 2 != 1 and dropping y's 2
    # keeps the LCS length, so y's 2 is a difference; then 1 == 1 matches.
    out = drift.lcs_mask(torch.tensor([[1, 2]], device=device), torch.tensor([[2, 1]], device=device))
    assert out.y.tolist() == [[False, True]]
    assert out.y_prime.tolist() == [[True, False]]


def test_length_8192_cpu():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 150000, 8192)
    keep = rng.random(8192) < 0.6
    b = np.where(keep, a, rng.integers(0, 150000, 8192))
    out = drift.lcs_mask(torch.from_numpy(a)[None], torch.from_numpy(b)[None])
    assert_kept_tokens_form_lcs_fast(out, a.tolist(), b.tolist())
    # With distinct random tokens almost surely only the kept ones match.
    assert int(out.lcs_length[0]) >= int(keep.sum())


def assert_kept_tokens_form_lcs_fast(out, a, b):
    kept_a = [t for t, d in zip(a, out.y[0].tolist()) if not d]
    kept_b = [t for t, d in zip(b, out.y_prime[0].tolist()) if not d]
    assert kept_a == kept_b and len(kept_a) == int(out.lcs_length[0])


@cuda_only
@pytest.mark.cuda
def test_length_8192_cuda_equals_cpu():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.integers(0, 50, (3, 8192)))
    b = torch.from_numpy(rng.integers(0, 50, (3, 8192)))
    cpu = drift.lcs_mask(a, b)
    gpu = drift.lcs_mask(a.cuda(), b.cuda())
    assert torch.equal(cpu.y, gpu.y.cpu()) and torch.equal(cpu.y_prime, gpu.y_prime.cpu())
    assert torch.equal(cpu.lcs_length, gpu.lcs_length.cpu())


# --- input kinds ---------------------------------------------------------------------------

def test_numpy_inputs_give_numpy_outputs():
    y = np.array([[1, 2, 3, 0], [4, 5, 0, 0]], dtype=np.int32)
    yp = np.array([[2, 3, 9], [5, 4, 0]], dtype=np.int32)
    out = drift.lcs_mask(y, yp, pad_id=0)
    assert isinstance(out.y, np.ndarray) and out.y.dtype == bool and out.y.shape == (2, 4)
    ref = reference.lcs_mask(y, yp, pad_id=0)
    assert out.y.tolist() == ref[0] and out.y_prime.tolist() == ref[1] and out.lcs_length.tolist() == ref[2]


def test_list_inputs_give_ragged_masks():
    out = drift.lcs_mask([[1, 2, 3], [], np.array([4, 4])], [[3], [1], torch.tensor([4])])
    assert [m.tolist() for m in out.y] == [[True, True, False], [], [True, False]]
    assert [m.tolist() for m in out.y_prime] == [[False], [True], [False]]
    assert out.lcs_length.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    "y, y_prime, match",
    [
        ([5, 8], [5, 2], r"flat list of ids; for one pair of sequences write lcs_mask\(\[\[5, 8\]\], \[\[5, 2\]\]\)"),
        ((5, 8), (5, 2), r"^y: .*lcs_mask\(\[\[5, 8\]\], \[\[5, 2\]\]\)"),
        ([np.int64(5), torch.tensor(8)], [5], r"lcs_mask\(\[\[5, 8\]\], \[\[5\]\]\)"),
        ([[5, 8]], [5, 2], r"^y_prime: .*flat list of ids; for one sequence write y_prime=\[\[5, 2\]\]"),
        ([[5, 8], 3], [[5], [3]], r"^y\[1\]: expected a 1-D sequence of token ids, got the single id 3"),
        (list(range(20)), [1], r"lcs_mask\(\[\[0, 1, 2, 3, 4, 5, 6, 7, \.\.\.\]\], \[\[1\]\]\)"),
    ],
)
def test_flat_list_of_ids_is_refused_with_the_nested_form(y, y_prime, match):
    # lcs_mask([5, 8], [5, 2]) once read two pairs of one token each (lcs_length [1, 0]).
    with pytest.raises(TypeError, match=match):
        drift.lcs_mask(y, y_prime)
    with pytest.raises(TypeError):  # the reference refuses it too (a 1-token row is not iterable)
        reference.lcs_mask(y, y_prime)


def test_nested_lists_tuples_arrays_and_tensors_still_accepted():
    want = drift.lcs_mask(torch.tensor([[5, 8]]), torch.tensor([[5, 2]]))
    assert want.lcs_length.tolist() == [1]
    for y, yp in (([[5, 8]], [[5, 2]]), (((5, 8),), ((5, 2),)), ([np.array([5, 8])], [torch.tensor([5, 2])]),
                  (np.array([[5, 8]]), np.array([[5, 2]]))):
        out = drift.lcs_mask(y, yp)
        assert [list(m) for m in out.y] == want.y.tolist() and [list(m) for m in out.y_prime] == want.y_prime.tolist()
        assert list(out.lcs_length) == [1]


def test_pad_id_uses_trailing_run_only():
    # A pad-valued token inside the sequence is content; only the trailing run is padding.
    y = torch.tensor([[3, 0, 4, 0, 0]])
    yp = torch.tensor([[0, 4, 0]])
    out = drift.lcs_mask(y, yp, pad_id=0)
    ref = reference.lcs_mask(y, yp, pad_id=0)
    assert out.y.tolist() == ref[0] and out.y_prime.tolist() == ref[1]
    assert out.y[0, 3:].tolist() == [False, False]
    assert out.lcs_length.tolist() == [2]


def test_explicit_lengths_override_pad_id():
    y = torch.tensor([[1, 2, 2]])
    yp = torch.tensor([[2, 2, 2]])
    out = drift.lcs_mask(y, yp, torch.tensor([3]), None, pad_id=2)
    assert out.lcs_length.tolist() == [0]  # y' is all padding by pad_id
    assert out.y.tolist() == [[True, True, True]]


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_views(device):
    rng = random.Random(3)
    base = torch.tensor([[rng.randrange(4) for _ in range(40)] for _ in range(6)], device=device)
    y = base[::2, ::2]  # (3, 20), strided in both dims
    yp = base[1::2].t().contiguous().t()[:, 5:]  # column-major layout
    assert not y.is_contiguous() and not yp.is_contiguous()
    out = drift.lcs_mask(y, yp)
    ref = reference.lcs_mask(y.cpu(), yp.cpu())
    assert out.y.cpu().tolist() == ref[0] and out.y_prime.cpu().tolist() == ref[1]


def test_mixed_integer_dtypes_and_small_ints():
    y = torch.tensor([[1, 2, 3]], dtype=torch.int32)
    yp = torch.tensor([[3, 2, 1, 2]], dtype=torch.int64)
    out = drift.lcs_mask(y, yp)
    assert out.lcs_length.tolist() == [reference.lcs_mask(y, yp)[2][0]]
    out8 = drift.lcs_mask(y.to(torch.uint8), yp.to(torch.int16))
    assert torch.equal(out8.y, out.y) and torch.equal(out8.y_prime, out.y_prime)


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(5)
    y = torch.from_numpy(rng.integers(0, 6, (64, 150)))
    yp = torch.from_numpy(rng.integers(0, 6, (64, 130)))
    before = drift.get_num_threads()
    try:
        drift.set_num_threads(1)
        one = drift.lcs_mask(y, yp)
        drift.set_num_threads(2)
        two = drift.lcs_mask(y, yp)
    finally:
        drift.set_num_threads(0)
    assert torch.equal(one.y, two.y) and torch.equal(one.y_prime, two.y_prime)
    assert drift.get_num_threads() == before or before > 0


def test_build_info_and_cuda_available():
    info = drift.build_info()
    assert set(info) >= {"cuda_compiled", "cuda_archs", "sanitized", "num_threads"}
    assert isinstance(drift.cuda_available(), bool)
    if not info["cuda_compiled"]:
        assert drift.cuda_available() is False


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((torch.zeros(3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)), {}, ValueError, "y: expected a 2-D"),
        ((torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 1, 3, dtype=torch.long)), {}, ValueError, "y_prime: expected a 2-D"),
        ((torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.long)), {}, TypeError, "y: expected integer"),
        ((torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.float64)), {}, TypeError, "y_prime: expected integer"),
        ((torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.long)), {}, TypeError, "y: expected integer"),
        ((torch.zeros(2, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)), {}, ValueError, "y_prime: batch size"),
        ((torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), torch.tensor([4])), {}, ValueError, "y_lengths"),
        ((torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), torch.tensor([-1])), {}, ValueError, "y_lengths"),
        ((torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), None, torch.tensor([1, 2])), {}, ValueError, "y_prime_lengths"),
        ((torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), torch.tensor([1.5])), {}, TypeError, "y_lengths"),
        ((torch.tensor([[1, -100, 2]]), torch.zeros(1, 3, dtype=torch.long)), {}, ValueError, "y: negative token ids"),
        ((torch.zeros(1, 3, dtype=torch.long), torch.tensor([[-5, 1]])), {}, ValueError, "y_prime: negative token ids"),
        ((torch.zeros(1, 3, dtype=torch.long), np.zeros((1, 3), dtype=np.int64)), {}, TypeError, "y_prime"),
        (("abc", "abd"), {}, TypeError, "y: expected"),
        ((np.zeros((1, 3)), np.zeros((1, 3))), {}, TypeError, "y: expected integer"),
        (([[1, 2]], [[1.5]]), {}, TypeError, r"y_prime\[0\]"),
        (([[[1, 2]]], [[1]]), {}, ValueError, r"y\[0\]: expected a 1-D"),
        (([[1, 2]], [[1]]), {"pad_id": 0}, ValueError, "pad_id"),
        ((torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)), {"pad_id": 1.5}, TypeError, "pad_id"),
    ],
)
def test_bad_input_raises_naming_the_argument(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        drift.lcs_mask(*args, **kwargs)


def test_negative_ids_allowed_in_padding():
    y = torch.tensor([[1, 2, -100]])
    out = drift.lcs_mask(y, torch.tensor([[2]]), torch.tensor([2]), None)
    assert out.y.tolist() == [[True, False, False]]


def test_native_layer_rejects_bad_views_itself():
    """The C++ entry points check shapes/dtypes even if the Python layer is bypassed."""
    from drift._native import _C, capsule

    y = torch.zeros(2, 3, dtype=torch.long)
    lens = torch.full((2,), 3, dtype=torch.long)
    my, out = torch.empty(2, 3, dtype=torch.bool), torch.empty(2, dtype=torch.long)
    with pytest.raises(ValueError, match="mask_y_prime"):
        _C.lcs_mask(capsule(y), capsule(y), capsule(lens), capsule(lens), capsule(my), capsule(my[:, :2].contiguous()), capsule(out))
    with pytest.raises(ValueError, match="y_lengths"):
        _C.lcs_mask(capsule(y), capsule(y), capsule(torch.tensor([3, 4])), capsule(lens), capsule(my), capsule(my), capsule(out))
    with pytest.raises(ValueError, match="y: unexpected dtype"):
        _C.lcs_mask(capsule(y.double()), capsule(y), capsule(lens), capsule(lens), capsule(my), capsule(my), capsule(out))
    with pytest.raises(ValueError, match="DLPack"):
        _C.lcs_mask(object(), capsule(y), capsule(lens), capsule(lens), capsule(my), capsule(my), capsule(out))
    with pytest.raises(ValueError, match="num_threads"):
        _C.set_num_threads(-1)


@cuda_only
@pytest.mark.cuda
def test_mixed_devices_raise():
    with pytest.raises(ValueError, match="y_prime: is on"):
        drift.lcs_mask(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long, device="cuda"))
    with pytest.raises(ValueError, match="y_lengths: is on"):
        drift.lcs_mask(torch.zeros(1, 3, dtype=torch.long, device="cuda"), torch.zeros(1, 3, dtype=torch.long, device="cuda"), torch.tensor([1]))


def test_mixed_devices_raise_with_meta_device():
    """Without a GPU, the meta device stands in for 'another device' in the device check."""
    with pytest.raises(ValueError, match="y_prime: is on"):
        drift.lcs_mask(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long, device="meta"))


def test_large_token_ids_use_the_hash_path():
    """Ids beyond the CPU driver's direct lookup table (>= 2**22) take its hash-map path."""
    rng = random.Random(21)
    ys, yps = [], []
    for _ in range(200):
        base = rng.choice([2**22, 2**40, 2**62])
        m, n = rng.randint(0, 70), rng.randint(0, 70)
        ys.append([base + rng.randrange(5) for _ in range(m)])
        yps.append([base + rng.randrange(5) for _ in range(n)])
    mixed_y = ys + [[1, 2**50, 3]]
    mixed_yp = yps + [[2**50, 3, 1]]
    out = assert_matches_reference(mixed_y, mixed_yp, "cpu")
    assert_kept_tokens_form_lcs(out, mixed_y, mixed_yp)
