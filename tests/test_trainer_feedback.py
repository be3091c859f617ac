"""What a run tells its user: progress bar, tracker steps, data warnings."""

from __future__ import annotations

import json
import re

import pytest

from conftest import TRAIN_DEPS, run_records, tiny_config

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


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
    from drift.trainer.run import tracker_payload

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", iterations=2, eval_base=True))
    its, steps = run_records(tmp_path / "run", "iteration"), run_records(tmp_path / "run", "step")
    assert [r["global_step"] for r in its] == [0, 4, 8]
    for it in its[1:]:
        last = max(s["global_step"] for s in steps if s["iteration"] == it["iteration"])
        assert it["global_step"] == last
    values, step = tracker_payload(its[2])
    assert step == 8 and values["iteration/rouge1"] == its[2]["rouge1"] and "iteration/global_step" not in values
    assert tracker_payload(steps[0])[1] == 1


def test_truncated_responses_get_no_eos_and_are_counted(tiny_model_dir, tiny_data, tmp_path, capsys):
    from drift import data
    from drift.trainer import DriftConfig, train
    from drift.trainer.examples import encode, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    cfg = DriftConfig(max_response_length=3, max_prompt_length=4)
    long = encode(tok, data.Row("one two three four five six", "a b c d e f g"), cfg, None)
    short = encode(tok, data.Row("one", "a b"), cfg, None)
    assert long.response_truncated and long.prompt_truncated and len(long.response_ids) == 3
    assert tok.eos_token_id not in long.response_ids  # no EOS after a cut
    assert not short.response_truncated and short.response_ids[-1] == tok.eos_token_id

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", max_response_length=3, num_train_examples=9))
    err = capsys.readouterr().err
    rec = run_records(tmp_path / "run", "data")
    assert len(rec) == 1 and rec[0]["responses_truncated"] > 0 and rec[0]["train_examples"] == 9
    assert rec[0]["pairs_left_out_per_epoch"] == 1
    assert f"max_response_length: {rec[0]['responses_truncated']} of 9 training responses" in err
    assert "num_train_examples: 1 of 9 training pairs do not fill an optimizer step" in err


def test_dropped_rows_are_warned_and_counted(tiny_model_dir, tiny_data, tmp_path, capsys):
    from drift.trainer import train

    rows = [json.loads(x) for x in tiny_data.read_text().splitlines()]
    rows[2]["response"] = 7
    rows[4]["response"] = None
    rows[6]["prompt"] = "   "
    del rows[8]["response"]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train(tiny_config(tiny_model_dir, path, tmp_path / "run", num_eval_examples=4))
    err = capsys.readouterr().err
    assert "dropped 3 of 24 rows with a missing or non-string 'prompt' or 'response' (first: row 3)" in err
    assert "dropped 1 of 24 rows with an empty 'prompt' or 'response' (first: row 7)" in err
    rec = run_records(tmp_path / "run", "data")[0]
    assert (rec["data_rows"], rec["data_dropped_not_a_string"], rec["data_dropped_empty"]) == (24, 3, 1)
