"""What a run leaves on disk: save_total_limit, adapter-only LoRA, the process umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from conftest import TRAIN_DEPS, tiny_config
from drift.trainer.layout import LINEAGE_FILE, RunLayout

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


def _modes(root: Path):
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_follow_the_process_umask(tiny_model_dir, tiny_data, tmp_path, umask):
    from drift.trainer import train

    old = os.umask(umask)
    try:
        train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run"))
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "run")
    run = RunLayout(tmp_path / "run")
    rel = lambda p: p.relative_to(run.root).as_posix()  # noqa: E731
    for name in map(rel, (run.config_json, run.fingerprint_json, run.metrics, run.generations(1), run.eval_json(1),
                          run.model(1) / "model.safetensors", run.train_info(1))):
        assert modes[name] == 0o666 & ~umask, (name, oct(modes[name]))
    for name in map(rel, (run.stage(1), run.model(1))):
        assert modes[name] == 0o777 & ~umask, (name, oct(modes[name]))


def test_run_layout_keeps_the_file_names_of_old_runs(tmp_path):
    """Resuming a run written by an older drift finds its stages under the same names."""
    run = RunLayout(tmp_path)
    got = [run.config_json, run.fingerprint_json, run.metrics, run.eval_json("base"), run.generations(1), run.masks(1),
           run.reference(1), run.eval_json(1), run.model(2), run.train_info(2), run.files(3).pruned,
           run.files(3).train_state_pointer, run.files(3).train_state(5)]
    assert [p.relative_to(tmp_path).as_posix() for p in got] == [
        "config.json", "fingerprint.json", "metrics.jsonl", "base/eval.json", "iter_1/generations.pt", "iter_1/masks.pt",
        "iter_1/reference.pt", "iter_1/eval.json", "iter_2/model", "iter_2/model/drift_train.json",
        "iter_3/model_pruned.json", "iter_3/train_state.json", "iter_3/train_state-5"]
    assert run.base == run.stage("base") and run.stage(0).name == "iter_0"


def test_save_total_limit_keeps_the_last_models_and_resumes(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    cfg = dict(iterations=3, sft_warmup_epochs=1, save_total_limit=1)
    records = train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", **cfg))
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    run = RunLayout(tmp_path / "run")
    assert [k for k in range(4) if run.model(k).is_dir()] == [3]
    assert all(run.files(k).pruned.is_file() and run.eval_json(k).is_file() for k in range(3))
    again = train(tiny_config(tiny_model_dir, tiny_data, run.root, **{**cfg, "iterations": 4}))  # resume + extend
    assert [r["iteration"] for r in again] == [0, 1, 2, 3, 4]
    assert [k for k in range(5) if run.model(k).is_dir()] == [4]


def test_lora_saves_the_adapter_alone_and_rebuilds_each_stage(tiny_model_dir, tiny_data, tmp_path):
    pytest.importorskip("peft")
    from drift.trainer import train
    from drift.trainer import load_model

    kw = dict(use_peft=True, lora_r=4, lora_alpha=8, iterations=2, learning_rate=1e-2)
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "a", **kw))
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "m", lora_save_merged=True, **kw))
    a, m = RunLayout(tmp_path / "a"), RunLayout(tmp_path / "m")
    for k in (1, 2):
        folder = a.model(k)
        names = {p.name for p in folder.iterdir()}
        assert "adapter_model.safetensors" in names and "model.safetensors" not in names, names
        size = (folder / "adapter_model.safetensors").stat().st_size
        assert size < (m.model(k) / "model.safetensors").stat().st_size / 10
    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path / "a", **kw)
    rebuilt = load_model(a.model(2), cfg, torch.device("cpu")).state_dict()
    merged = load_model(m.model(2), cfg, torch.device("cpu")).state_dict()
    base = load_model(tiny_model_dir, cfg, torch.device("cpu")).state_dict()
    assert rebuilt.keys() == merged.keys()
    assert any(not torch.equal(rebuilt[k], base[k]) for k in base)
    for k in merged:
        assert torch.allclose(rebuilt[k], merged[k], atol=1e-6), k
    # the run folder can move: each stage holds its whole lineage, against the absolute base path
    os.rename(tmp_path / "a", tmp_path / "moved")
    moved = load_model(RunLayout(tmp_path / "moved").model(2), cfg, torch.device("cpu")).state_dict()
    assert all(torch.equal(moved[k], rebuilt[k]) for k in moved)
    lineage = json.loads((RunLayout(tmp_path / "moved").model(2) / LINEAGE_FILE).read_text())
    assert [(p["r"], p["lora_alpha"]) for p in lineage["pieces"]] == [(4, 8), (4, 8)]  # iterations 1 and 2, stacked
