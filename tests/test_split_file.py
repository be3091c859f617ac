"""``split_file``: the train / held-out rows as listed row ids instead of the seeded shuffle."""
import json

import pytest

from drift import data
from drift.trainer.config import DriftConfig


def _rows(n):
    return [data.Row(f"p{i}", f"r{i}") for i in range(n)]


def _split(tmp_path, obj, name="split.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


def test_ids_pick_rows_in_listed_order_and_counts_take_a_prefix(tmp_path):
    ids = data.read_split_file(_split(tmp_path, {"train_ids": [5, 0, 3], "eval_ids": [7, 1], "rows_in_set": 9}))
    assert ids == data.SplitIds((5, 0, 3), (7, 1), 9)
    train, held = data.split_rows(_rows(9), None, -1, -1, seed=123, ids=ids)
    assert [r.prompt for r in train] == ["p5", "p0", "p3"] and [r.prompt for r in held] == ["p7", "p1"]
    train, held = data.split_rows(_rows(9), None, 2, 1, seed=0, ids=ids)
    assert [r.prompt for r in train] == ["p5", "p0"] and [r.prompt for r in held] == ["p7"]
    # with separate held-out data, eval_ids index that data (and may repeat train positions)
    pool = [data.Row(f"e{i}", "x") for i in range(8)]
    ids = data.SplitIds((1, 2), (1, 7))
    train, held = data.split_rows(_rows(3), pool, -1, -1, seed=0, ids=ids)
    assert [r.prompt for r in train] == ["p1", "p2"] and [r.prompt for r in held] == ["e1", "e7"]


def test_seeded_split_is_unchanged_without_ids():
    rows = _rows(20)
    assert data.split_rows(rows, None, 5, 4, 0) == data.split_rows(rows, None, 5, 4, 0, ids=None)
    order = data.split_order(20, 0)
    train, held = data.split_rows(rows, None, 5, 4, 0)
    assert [r.prompt for r in train] == [f"p{i}" for i in order[:5]]
    assert [r.prompt for r in held] == [f"p{i}" for i in order[5:9]]


@pytest.mark.parametrize("obj, match", [
    ("[1, 2]", "expected a JSON object"),
    ("{not json", "not a JSON file"),
    ({"eval_ids": [1]}, "'train_ids' must be a list"),
    ({"train_ids": [1, -2], "eval_ids": [3]}, "'train_ids' must be a list of row positions"),
    ({"train_ids": [1, True], "eval_ids": [3]}, "'train_ids' must be a list"),
    ({"train_ids": [1, 2.0], "eval_ids": [3]}, "'train_ids' must be a list"),
    ({"train_ids": [1, 1], "eval_ids": [3]}, "more than once"),
    ({"train_ids": [], "eval_ids": [3]}, "'train_ids' is empty"),
    ({"train_ids": [1], "eval_ids": [3], "rows_in_set": "9"}, "'rows_in_set'"),
])
def test_bad_split_files_are_named(tmp_path, obj, match):
    p = _split(tmp_path, obj)
    with pytest.raises(ValueError, match=match) as e:
        data.read_split_file(p)
    assert str(e.value).startswith(f"split_file: {p}")


def test_missing_file_and_ids_that_do_not_fit_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="split_file: .*is not a file"):
        data.read_split_file(tmp_path / "nope.json")
    rows = _rows(6)
    with pytest.raises(ValueError, match=r"split_file: train_ids \[9\] are outside the 6 usable rows"):
        data.split_rows(rows, None, -1, -1, 0, data.SplitIds((0, 9), (1,)))
    with pytest.raises(ValueError, match=r"split_file: .*share rows \[1\]"):
        data.split_rows(rows, None, -1, -1, 0, data.SplitIds((0, 1), (1, 2)))
    with pytest.raises(ValueError, match="split_file: written for a data set of 7 rows, but the data has 6"):
        data.split_rows(rows, None, -1, -1, 0, data.SplitIds((0,), (1,), 7))
    with pytest.raises(ValueError, match="num_train_examples: 3 requested but the split file lists 2 train_ids"):
        data.split_rows(rows, None, 3, -1, 0, data.SplitIds((0, 4), (1,)))
    with pytest.raises(ValueError, match="num_eval_examples: 2 requested but the split file lists 1 eval_ids"):
        data.split_rows(rows, None, -1, 2, 0, data.SplitIds((0, 4), (1,)))
    with pytest.raises(ValueError, match="'eval_ids' is empty"):
        data.split_rows(rows, None, -1, -1, 0, data.SplitIds((0, 4), ()))


def test_config_field_and_resume_treat_the_file_as_an_input(tmp_path):
    from drift.trainer import rundir

    cfg = DriftConfig(split_file=str(tmp_path / "a.json"))
    assert cfg.validate().split_file.endswith("a.json")
    # which file names the rows is free to change on resume; the rows' content is fingerprinted
    assert rundir.settings_diff(DriftConfig().to_dict(), cfg) == []
