"""What a run tells its user (issue 12 items 6, 8, 10): progress bar, tracker steps, data warnings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import TRAIN_DEPS, tiny_config

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


def _records(out: Path, kind: str):
    return [r for r in (json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip())
            if r["kind"] == kind]


def test_training_progress_bar_shows_loss_lr_and_rate(tiny_model_dir, tiny_data, tmp_path, capsys):
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run"))
    err = capsys.readouterr().err
    bars = [line for line in re.split(r"[\r\n]", err) if "iter_1: train" in line]
    assert bars, err[-2000:]
    last = bars[-1]
    assert "4/4" in last and "loss=" in last and "lr=" in last and re.search(r"(step/s|s/step)", last), last


def test_iteration_metrics_are_logged_at_the_global_step(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train
    from drift.trainer.loop import tracker_payload

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", iterations=2, eval_base=True))
    its, steps = _records(tmp_path / "run", "iteration"), _records(tmp_path / "run", "step")
    assert [r["global_step"] for r in its] == [0, 4, 8]
    for it in its[1:]:
        last = max(s["global_step"] for s in steps if s["iteration"] == it["iteration"])
        assert it["global_step"] == last
    values, step = tracker_payload(its[2])
    assert step == 8 and values["iteration/rouge1"] == its[2]["rouge1"] and "iteration/global_step" not in values
    assert tracker_payload(steps[0])[1] == 1
