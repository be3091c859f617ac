"""`drift eval` / `drift generate` on a run: the run's data and split, prompts-only files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TRAIN_DEPS, tiny_config

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tiny_data, tmp_path_factory) -> Path:
    from drift.trainer import train

    out = tmp_path_factory.mktemp("tools") / "run"
    train(tiny_config(tiny_model_dir, tiny_data, out))
    return out


@pytest.mark.parametrize("which", ["run", "model"])
def test_eval_reads_the_runs_config_and_says_what_it_scores(tiny_run, tiny_data, capsys, which):
    from drift.cli import main

    model = tiny_run if which == "run" else tiny_run / "iter_1" / "model"
    assert main(["eval", "--model", str(model)]) == 0
    captured = capsys.readouterr()
    scores = json.loads(captured.out[captured.out.index("{"):])
    stored = json.loads((tiny_run / "iter_1" / "eval.json").read_text())
    assert {k: scores[k] for k in ("rouge1", "rouge2", "rougeL")} == {k: stored[k] for k in ("rouge1", "rouge2", "rougeL")}
    assert f"settings of the run in {tiny_run}" in captured.err
    assert str(tiny_data) in captured.err and "held-out split: 4 examples" in captured.err
    assert f"model {tiny_run / 'iter_1' / 'model'}" in captured.err


def test_generate_from_a_prompts_only_file(tiny_run, tmp_path, capsys):
    from drift.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat on a mat\n\nnews team won the game today\n")
    out = tmp_path / "gen.jsonl"
    assert main(["generate", "--model", str(tiny_run), "--prompts", str(prompts), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["the cat sat on a mat", "news team won the game today"]
    assert all(set(r) == {"prompt", "generation", "ended", "generation_ids"} for r in rows)  # no reference
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "rain in the city"}) + "\n")
    assert main(["generate", "--model", str(tiny_run), "--prompts", str(jsonl), "--output", str(out)]) == 0
    assert "prompts " + str(jsonl) in capsys.readouterr().err


def test_a_run_without_a_model_is_named(tmp_path, capsys):
    from drift.cli import main

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["eval", "--model", str(tmp_path)]) == 2
    assert "has no trained model yet" in capsys.readouterr().err
