"""The trainer on a GPU: one DRIFT iteration end to end on the tiny fixture model, in bf16 mixed
precision with gradient checkpointing, then kill -9 mid-training and resume.

``drift train`` runs in subprocesses (as a user runs it), on CUDA: generation, the DAM masks,
the reference pass, training with the fused ops, evaluation, checkpoint and resume. The same
test runs on the CPU too (``-m slow``), so that its logic is checked where no GPU is.

The resumed run must match the uninterrupted one within :data:`LOSS_TOL` and the weight bounds
below: on a GPU a kernel may sum in another order from run to run (atomics), so equality is not
bit for bit there.
Runs on the GPU machine with the bundle's model through ``DRIFT_TEST_TINY_MODEL``
(tests/conftest.py, scripts/gpu_check.py's smoke step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch

import drift
from conftest import TRAIN_DEPS, model_weights, tiny_config, train_cli, write_config
from drift.trainer.layout import RunLayout

#: The trainer's bf16 mixed-precision setting (fp32 master weights, bf16 compute): the one place
#: to change if the option is named differently (e.g. {"mixed_precision": "bf16"}).
BF16 = {"bf16": True}
#: Where the run is killed: after optimizer step 3 of iteration 1's training (of 4).
FAULT = "iter_1: train:step3"
#: Resumed vs uninterrupted, per-step losses.
LOSS_TOL = dict(rel=1e-2, abs=1e-3)
#: Resumed vs uninterrupted, final weights: per tensor, the mean difference within 1% of the mean
#: distance training moved it, and no element off by more than 4 learning rates (AdamW's update is
#: about lr per element per step whatever the gradient's size, so an element whose gradient is at
#: rounding level may step either way).
WEIGHT_MEAN_FRACTION, WEIGHT_MAX_LRS = 0.01, 4

CUDA = torch.cuda.is_available() and drift.cuda_available()
pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")

RUN = dict(method="drift", iterations=1, eval_base=False, gradient_checkpointing=True, save_steps=1,
           num_train_examples=8, per_device_train_batch_size=2, learning_rate=1e-3, lr_scheduler_type="constant")


def _config(model_dir: Path, data: Path, out: Path, device: str):
    from drift.trainer import DriftConfig

    names = {f.name for f in dataclasses.fields(DriftConfig)}
    missing = [k for k in BF16 if k not in names]
    if missing:  # on the GPU this is the point of the test: fail; on the CPU wait for the option
        msg = (f"DriftConfig has no {missing}: set BF16 at the top of {Path(__file__).name} to the trainer's "
               "bf16 mixed-precision option")
        pytest.fail(msg) if device == "cuda" else pytest.skip(msg)
    return tiny_config(model_dir, data, out, **RUN, **BF16)


def _train(config, path: Path, device: str, env_extra=None):
    env = dict(env_extra or {})
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
    return train_cli(write_config(path, config), env, timeout=600)


def _steps(out: Path):
    recs = [json.loads(line) for line in RunLayout(out).metrics.read_text().splitlines() if line.strip()]
    return [r for r in recs if r["kind"] == "step"]


@pytest.mark.parametrize("device", [
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and drift's CUDA kernels")]),
    pytest.param("cpu", marks=pytest.mark.slow),
])
def test_drift_iteration_bf16_checkpointing_kill_and_resume(tiny_model_dir, tiny_data, tmp_path, device):
    ref_out, run_out = tmp_path / "ref", tmp_path / "run"
    done = _train(_config(tiny_model_dir, tiny_data, ref_out, device), tmp_path / "ref.yaml", device)
    assert done.returncode == 0, done.stderr[-4000:]

    # One DRIFT iteration: every stage wrote its output, the losses are finite, DAM masked something.
    ref = RunLayout(ref_out)
    for path in (ref.generations(1), ref.masks(1), ref.reference(1), ref.eval_json(1), ref.model(1) / "model.safetensors"):
        assert path.is_file(), path
    steps = _steps(ref_out)
    assert len(steps) == 4 and all(math.isfinite(s["loss"]) and math.isfinite(s["oal_loss"]) for s in steps)
    gens = torch.load(RunLayout(ref_out).generations(1), weights_only=False)["ids"]
    assert len(gens) == 8 and any(len(g) for g in gens)
    # Mixed precision keeps fp32 master weights: saved in fp32, and a step moved them.
    before, after = model_weights(tiny_model_dir), model_weights(RunLayout(ref_out).model(1))
    assert all(t.dtype == torch.float32 for t in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)

    # kill -9 after step 3, resume from the saved training state, finish like the uninterrupted run.
    cfg = _config(tiny_model_dir, tiny_data, run_out, device)
    killed = _train(cfg, tmp_path / "run.yaml", device, {"DRIFT_FAULT_INJECT": FAULT})
    assert killed.returncode == -9, killed.stderr[-4000:]
    assert RunLayout(run_out).files(1).train_state_pointer.is_file()
    resumed = _train(cfg, tmp_path / "run.yaml", device)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert json.loads(RunLayout(run_out).train_info(1).read_text())["resumed_from_step"] == 3
    assert not list(run_out.rglob("train_state*")), "training state left behind"
    resumed_steps = _steps(run_out)
    assert [r["step"] for r in resumed_steps] == [1, 2, 3, 4]
    for a, b in zip(steps, resumed_steps):
        assert a["loss"] == pytest.approx(b["loss"], **LOSS_TOL), a["step"]
    resumed_w = model_weights(RunLayout(run_out).model(1))
    assert resumed_w.keys() == after.keys()
    lr = RUN["learning_rate"]
    for k, w in after.items():
        diff = (w - resumed_w[k]).abs()
        moved = float((w - before[k]).abs().mean()) if k in before else 0.0
        assert float(diff.mean()) <= WEIGHT_MEAN_FRACTION * moved + 1e-7, (k, float(diff.mean()), moved)
        assert float(diff.max()) <= WEIGHT_MAX_LRS * lr, (k, float(diff.max()))
