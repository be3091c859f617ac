"""Resuming and extending a run: data fingerprint, resolved paths, --iterations."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import TRAIN_DEPS, tiny_config

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


def _copy_data(src: Path, dst: Path) -> Path:
    dst.write_text(src.read_text())
    return dst


def _iterations(out: Path):
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r["iteration"] for r in recs if r["kind"] == "iteration"]


def test_changed_data_content_is_refused_naming_what_changed(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    data = _copy_data(tiny_data, tmp_path / "pairs.jsonl")
    cfg = tiny_config(tiny_model_dir, data, tmp_path / "run")
    train(cfg)
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    rows[0]["response"] = rows[0]["response"] + " edited"  # row 0 is in one of the splits
    rows[5]["response"] = "changed too"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ValueError, match=r"data: the (train|eval) examples differ .* examples differ \(positions"):
        train(cfg)
    assert (tmp_path / "run" / "config.json").read_text() == before


def test_raising_iterations_extends_a_finished_run(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", iterations=1))
    model1 = (tmp_path / "run" / "iter_1" / "model" / "model.safetensors").read_bytes()
    records = train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", iterations=2))
    assert [r["iteration"] for r in records] == [1, 2]
    assert _iterations(tmp_path / "run") == [1, 2]
    assert (tmp_path / "run" / "iter_1" / "model" / "model.safetensors").read_bytes() == model1  # not retrained
    assert json.loads((tmp_path / "run" / "config.json").read_text())["iterations"] == 2


def test_the_same_file_by_another_path_resumes(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    from drift.trainer import train

    data = _copy_data(tiny_data, tmp_path / "pairs.jsonl")
    train(tiny_config(tiny_model_dir, data.resolve(), tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    records = train(tiny_config(tiny_model_dir, Path("pairs.jsonl"), Path("run")))  # relative spelling: same run
    assert [r["iteration"] for r in records] == [1]
    moved = _copy_data(data, tmp_path / "moved.jsonl")  # same content elsewhere: same run
    assert [r["iteration"] for r in train(tiny_config(tiny_model_dir, moved, Path("run")))] == [1]
    rel_model = Path(os.path.relpath(tiny_model_dir, tmp_path))
    assert [r["iteration"] for r in train(tiny_config(tiny_model_dir, moved, Path("run"),
                                                      model_name_or_path=str(rel_model)))] == [1]


def test_stage_shaping_settings_are_refused_with_old_and_new_values(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run"))
    with pytest.raises(ValueError, match=r"max_response_length: 12 -> 10"):
        train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", max_response_length=10))
    # timing knobs may change
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", save_steps=7, generation_batch_size=2))
