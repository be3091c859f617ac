"""Evaluation as a transformers/TRL user sets it up: per_device_eval_batch_size
batches evaluation, eval_steps evaluates inside a training stage, eval_metric chooses (or skips) the score."""

from __future__ import annotations

import json

import pytest

from conftest import TRAIN_DEPS, run_records, tiny_config, untimed
from drift.trainer.layout import RunLayout

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


@pytest.fixture
def generate_spy(monkeypatch):
    """The batch size of every model.generate() call, in order."""
    from transformers import GenerationMixin

    sizes = []
    real = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        sizes.append(int(kwargs["input_ids"].shape[0]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    return sizes


# ---------------------------------------------------------------------------------------------
# per_device_eval_batch_size batches evaluation
def test_evaluation_batches_by_per_device_eval_batch_size(tiny_model_dir, tiny_data, tmp_path, generate_spy,
                                                          monkeypatch):
    from drift.trainer import batching, train

    ref_batches = []
    real_batch = batching.self_play_batch

    def batch_spy(items, *a, **k):
        ref_batches.append(len(items))
        return real_batch(items, *a, **k)

    monkeypatch.setattr(batching, "self_play_batch", batch_spy)
    # 8 training prompts, 4 held-out: self-play generation in 4s, evaluation in 2s, reference pass in 3s
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", generation_batch_size=4,
                      per_device_eval_batch_size=2, precompute_ref_batch_size=3, eval_base=True))
    assert generate_spy == [2, 2, 4, 4, 2, 2]  # base eval, iter_1 generate, iter_1 eval
    assert ref_batches[:3] == [3, 3, 2]  # then the training micro-batches (per_device_train_batch_size 2)
    assert set(ref_batches[3:]) == {2}


def test_drift_eval_batches_by_per_device_eval_batch_size(tiny_model_dir, tiny_data, tmp_path, generate_spy, capsys):
    from drift.cli import main
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run"))
    generate_spy.clear()
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "run"), "--per_device_eval_batch_size", "1"]) == 0
    assert generate_spy == [1, 1, 1, 1]  # the run's 4 held-out prompts, one per call
    assert set(json.loads(capsys.readouterr().out)) == {"rouge1", "rouge2", "rougeL"}


def test_help_says_what_each_batch_size_batches(capsys):
    from drift.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--per_device_eval_batch_size" in out and "--generation_batch_size" not in out
    assert "held-out prompts per generate() call" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Evaluation batches by per_device_eval_batch_size" in out  # generation_batch_size's help
    assert "precompute_ref_batch_size" in out


def test_demo_keeps_the_batches_its_table_was_made_with():
    """The README demo evaluated in batches of 16 (generation_batch_size then) and scored the reference pass in 8s."""
    from drift.trainer.config import DriftConfig, demo_settings

    for name in ("xsum", "mtsdialog"):
        demo = demo_settings(name)
        assert demo["per_device_eval_batch_size"] == 16 and demo["generation_batch_size"] == 16
        assert demo["precompute_ref_batch_size"] == 8
        assert "eval_steps" not in demo and "eval_metric" not in demo
    assert DriftConfig().eval_steps is None and DriftConfig().eval_metric == "rouge"


# ---------------------------------------------------------------------------------------------
# eval_steps
def test_eval_steps_logs_eval_records_at_the_global_step(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train
    from drift.trainer.run import tracker_payload

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "plain", iterations=2))
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", iterations=2, eval_steps=2))
    evals = run_records(tmp_path / "run", "eval")
    # 4 optimizer steps per iteration: step 2 of each (step 4 is the iteration record's evaluation)
    assert [(r["iteration"], r["step"], r["global_step"]) for r in evals] == [(1, 2, 2), (2, 2, 6)]
    for r in evals:
        assert all(0 <= r[k] <= 100 for k in ("rouge1", "rouge2", "rougeL"))
        nums, step = tracker_payload(r)
        assert step == r["global_step"] and "eval/rouge1" in nums
    # evaluating in between changes nothing of the training
    for kind in ("step", "iteration"):
        assert untimed(run_records(tmp_path / "run", kind)) == untimed(run_records(tmp_path / "plain", kind)), kind
    assert not run_records(tmp_path / "plain", "eval")  # off by default


class _Killed(Exception):
    pass


def test_eval_records_after_the_last_save_are_rewritten_on_resume(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    from drift import atomic
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "ref", eval_steps=1))
    ref = run_records(tmp_path / "ref", "eval")
    assert [r["step"] for r in ref] == [1, 2, 3]

    def fault(name):
        if name == "iter_1: train:step3":
            raise _Killed(name)

    monkeypatch.setattr(atomic, "fault_point", fault)
    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", eval_steps=1)  # save_steps 2
    with pytest.raises(_Killed):
        train(cfg)
    assert [r["step"] for r in run_records(tmp_path / "run", "eval")] == [1, 2, 3]
    assert RunLayout(tmp_path / "run").files(1).train_state_pointer.is_file()
    monkeypatch.setattr(atomic, "fault_point", lambda name: None)
    train(cfg)  # resumes from step 2: the eval record of step 3 is dropped and written again
    assert untimed(run_records(tmp_path / "run", "eval")) == untimed(ref)


def test_eval_steps_is_validated():
    from drift.trainer import DriftConfig

    with pytest.raises(ValueError, match="eval_steps"):
        DriftConfig(eval_steps=-1).validate()
    with pytest.raises(ValueError, match="eval_steps: .*eval_metric"):
        DriftConfig(eval_steps=5, eval_metric="none").validate()
    with pytest.raises(ValueError, match="eval_metric: expected one of"):
        DriftConfig(eval_metric="bleu").validate()
    assert DriftConfig(eval_steps=0).validate().eval_steps == 0


# ---------------------------------------------------------------------------------------------
# eval_metric
def test_eval_metric_none_skips_held_out_generation(tiny_model_dir, tiny_data, tmp_path, generate_spy, capsys):
    from drift.cli import main

    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", eval_metric="none", eval_base=True)
    y = tmp_path / "c.yaml"
    y.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.to_dict().items()))
    assert main(["train", "--config", str(y)]) == 0
    assert generate_spy == [4, 4]  # iter_1's self-play generation only: no base or held-out evaluation
    its = run_records(tmp_path / "run", "iteration")
    assert [r["iteration"] for r in its] == [1]
    assert not {"rouge1", "rouge2", "rougeL", "eval_s"} & set(its[0])
    assert not list((tmp_path / "run").rglob("eval.json")) and not (tmp_path / "run" / "rouge.png").exists()
    out = capsys.readouterr().out
    assert "iter_1" in out and "plot: none" in out
    assert main(["plot", str(tmp_path / "run"), "--output", str(tmp_path / "r.png")]) == 2
    assert "no ROUGE scores (trained with eval_metric none); plot its loss with --metric loss" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "run"), "--metric", "loss", "--output", str(tmp_path / "l.png")]) == 0


def test_eval_metric_rouge_scores_every_stage(tiny_model_dir, tiny_data, tmp_path, generate_spy):
    from drift.trainer import train

    records = train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", eval_metric="rouge", eval_base=True))
    assert [r["stage"] for r in records] == ["base", "iter_1"]
    assert all({"rouge1", "rouge2", "rougeL"} <= set(r) for r in records)
    assert RunLayout(tmp_path / "run").eval_json(1).is_file() and generate_spy == [4, 4, 4, 4]
