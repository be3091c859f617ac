"""Damaged files in a run folder: found by their recorded size and SHA-256 (or by loading), healed where the
folder's own inputs redo them, else refused in one line naming the file; nothing finished is lost."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import TRAIN_DEPS, run_records, tiny_config, untimed, write_config
from drift.trainer.layout import RunLayout

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")

KILL_AT = "iter_2: train:step3"  # iter_1 finished; iter_2 has its generations, masks, reference and train_state-2


class _Killed(Exception):
    pass


def _config(model_dir, data, out):
    return tiny_config(model_dir, data, out, iterations=2)  # 4 optimizer steps per iteration, save_steps 2


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tiny_data, tmp_path_factory):
    """``(uninterrupted run folder, folder of the same run killed at KILL_AT)``."""
    from drift import atomic
    from drift.trainer import train

    root = tmp_path_factory.mktemp("damage")
    train(_config(tiny_model_dir, tiny_data, root / "whole"))

    def fault(name):
        if name == KILL_AT:
            raise _Killed(name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic, "fault_point", fault)
        with pytest.raises(_Killed):
            train(_config(tiny_model_dir, tiny_data, root / "killed"))
    killed = RunLayout(root / "killed")
    assert killed.files(2).train_state_pointer.is_file() and killed.train_info(1).is_file()
    return root / "whole", root / "killed"


def _records(out: Path) -> list:
    """The run's records without timings, by kind, iteration and step (a record written again may move)."""
    return sorted(untimed(run_records(out)), key=lambda r: (r["kind"], r.get("iteration", -9), r.get("step", 0)))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0x10  # inside the data, past the headers
    path.write_bytes(bytes(data))


def _largest(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _copy(src: Path, dst: Path) -> RunLayout:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["output_dir"] = str(dst)
    (dst / "config.json").write_text(json.dumps(cfg))
    return RunLayout(dst)


def _drop_iteration_record(run: RunLayout, index: int) -> None:
    lines = run.metrics.read_text().splitlines()
    kept = [x for x in lines if not (json.loads(x)["kind"] == "iteration" and json.loads(x)["iteration"] == index)]
    assert len(kept) == len(lines) - 1
    run.metrics.write_text("".join(x + "\n" for x in kept))


@pytest.mark.parametrize("damage", [_truncate, _flip], ids=["truncated", "bit-flipped"])
def test_damaged_stage_outputs_are_computed_again_to_the_same_result(runs, tiny_model_dir, tiny_data, tmp_path,
                                                                     capsys, damage):
    from drift.trainer import train

    whole, killed = runs
    run = _copy(killed, tmp_path / "run")
    state = run.stage(2) / json.loads(run.files(2).train_state_pointer.read_text())["dir"]
    damaged = [run.generations(2), run.masks(2), run.reference(2), _largest(state), run.eval_json(1)]
    for path in damaged:
        damage(path)
    _drop_iteration_record(run, 1)  # as if killed between iter_1's eval.json and its record: eval.json is needed
    with open(run.metrics, "a") as f:
        f.write('{"kind": "step", "ite')  # and a line torn by the kill
    capsys.readouterr()
    train(_config(tiny_model_dir, tiny_data, run.root))
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("drift train: warning:")]
    for path in damaged:
        assert any(str(path) in w for w in warnings), (path, warnings)
    assert _records(run.root) == _records(whole)
    for line in run.metrics.read_text().splitlines():  # the torn line is gone: valid JSON Lines
        json.loads(line)


def test_a_damaged_training_state_pointer_trains_the_stage_again(runs, tiny_model_dir, tiny_data, tmp_path, capsys):
    from drift.trainer import train

    whole, killed = runs
    run = _copy(killed, tmp_path / "run")
    _truncate(run.files(2).train_state_pointer)
    train(_config(tiny_model_dir, tiny_data, run.root))
    assert f"{run.files(2).train_state_pointer}: not valid JSON" in capsys.readouterr().err
    assert _records(run.root) == _records(whole)
    assert json.loads(run.train_info(2).read_text())["resumed_from_step"] == 0


def test_a_run_folder_without_manifests_resumes_and_verifies_by_loading(runs, tiny_model_dir, tiny_data, tmp_path,
                                                                       capsys):
    from drift.trainer import train

    whole, killed = runs
    run = _copy(killed, tmp_path / "run")
    for manifest in run.root.rglob("manifest.json"):
        manifest.unlink()
    _truncate(run.generations(2))
    train(_config(tiny_model_dir, tiny_data, run.root))
    assert f"{run.generations(2)}: cannot be read" in capsys.readouterr().err
    assert _records(run.root) == _records(whole)


@pytest.mark.parametrize("target,damage", [
    ("model.safetensors", _truncate), ("model.safetensors", _flip), ("drift_train.json", _truncate),
], ids=["weights-truncated", "weights-bit-flipped", "train-info-truncated"])
def test_a_damaged_stage_model_is_refused_in_one_line_naming_the_file(runs, tiny_model_dir, tiny_data, tmp_path,
                                                                      capsys, target, damage):
    from drift.cli import main

    _, killed = runs
    run = _copy(killed, tmp_path / "run")
    damage(run.model(1) / target)
    y = write_config(tmp_path / "c.yaml", _config(tiny_model_dir, tiny_data, run.root))
    capsys.readouterr()
    assert main(["train", "--config", str(y)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and str(run.model(1) / target) in err[0], err
    assert f"delete {run.model(1)}" in err[0] and "rerun the same command" in err[0]


def test_a_damaged_stage_model_saved_before_manifests_is_named_when_it_does_not_load(runs, tiny_model_dir,
                                                                                     tiny_data, tmp_path):
    from drift import atomic
    from drift.trainer import train

    _, killed = runs
    run = _copy(killed, tmp_path / "run")
    for manifest in run.root.rglob("manifest.json"):
        manifest.unlink()
    _truncate(run.model(1) / "model.safetensors")
    with pytest.raises(atomic.DamagedFile, match=f"{run.model(1)}: cannot be loaded .*rerun the same command"):
        train(_config(tiny_model_dir, tiny_data, run.root))


def test_a_finished_run_reports_without_its_cached_stage_outputs(runs, tiny_model_dir, tiny_data, tmp_path, capsys):
    from drift.trainer import format_table, train

    whole, _ = runs
    run = _copy(whole, tmp_path / "run")
    for k in (1, 2):
        for path in (run.generations(k), run.masks(k), run.reference(k), run.eval_json(k)):
            path.unlink()
    capsys.readouterr()
    records = train(_config(tiny_model_dir, tiny_data, run.root))
    out = capsys.readouterr()
    assert "warning" not in out.err and format_table(records) in out.out
    assert untimed(records) == untimed(run_records(whole, "iteration"))
    assert not run.generations(1).exists() and not run.reference(2).exists()  # nothing was computed again


@pytest.mark.parametrize("name", ["config.json", "fingerprint.json"])
def test_a_half_written_run_json_file_is_named_in_its_error(runs, tiny_model_dir, tiny_data, tmp_path, name):
    from drift.trainer import train

    whole, _ = runs
    run = _copy(whole, tmp_path / "run")
    (run.root / name).write_text('{"method": "drift", "model_name_or_path": "x')
    with pytest.raises(ValueError, match=f"{run.root / name}: not valid JSON \\(Unterminated string .*\\); delete it"):
        train(_config(tiny_model_dir, tiny_data, run.root))


def test_read_json_names_the_file_and_says_what_to_do(tmp_path):
    from drift import atomic

    path = tmp_path / "eval.json"
    path.write_text('{"rouge1": 3.')
    with pytest.raises(atomic.DamagedFile, match=f"^{path}: not valid JSON \\(.*line 1 column .*\\); restore it$"):
        atomic.read_json(path, "restore it")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        atomic.read_json(path)


def test_the_python_api_asks_for_a_tokenizer_for_a_nameless_model_without_going_online(tiny_model_dir, tiny_data,
                                                                                      tmp_path, monkeypatch):
    import huggingface_hub
    from transformers import AutoModelForCausalLM

    import drift

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def online(*a, **k):
        raise AssertionError("the Hub was contacted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", online)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.name_or_path = ""
    model.config._name_or_path = ""
    rows = [json.loads(x) for x in tiny_data.read_text().splitlines()]
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="tokenizer: required with model=LlamaForCausalLM .*tokenizer=<its tokenizer>"):
        drift.train(drift.DriftConfig(output_dir=str(tmp_path / "run"), num_train_examples=8, num_eval_examples=4),
                    model=model, train_dataset=rows)
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "run").exists()
