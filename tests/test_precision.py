"""Mixed precision (bf16 / fp16 flags, as in transformers) and device placement of the trainer.

Runs on CPU: the CUDA decisions are made by functions of (config, device type) tested here with
a "cuda" device type, and tensor placement is checked by running the training loss on the meta
device (every tensor the trainer creates must follow ``accelerator.device``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import TRAIN_DEPS, model_weights, tiny_config
from drift.trainer.layout import RunLayout

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


def changed_fraction(before, after) -> float:
    """Fraction of weight elements whose value differs (compared in float32)."""
    changed = total = 0
    for k in before:
        a, b = before[k].float(), after[k].float()
        changed += int((a != b).sum())
        total += a.numel()
    return changed / total


SMALL_LR = dict(learning_rate=5e-7, lr_scheduler_type="constant", warmup_ratio=0.0, iterations=1, method="drift")


def test_bf16_small_lr_changes_most_weights(tiny_model_dir, tiny_data, tmp_path):
    """bf16 = fp32 masters + bf16 autocast: at lr 5e-7 nearly every weight moves (bf16 weights: almost none)."""
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "mixed", bf16=True, **SMALL_LR))
    before = model_weights(tiny_model_dir)
    after = model_weights(RunLayout(tmp_path / "mixed").model(1))
    assert all(v.dtype == torch.float32 for v in after.values())  # the master copy is saved
    mixed = changed_fraction(before, after)
    assert mixed > 0.9, mixed


def test_bf16_weights_without_master_copy_lose_small_updates(tiny_model_dir, tiny_data, tmp_path, capsys):
    """dtype: bfloat16 (no master copy) stays available but warns; most lr-5e-7 updates round away."""
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "pure", dtype="bfloat16", **SMALL_LR))
    assert "bf16: true" in capsys.readouterr().err
    before = model_weights(tiny_model_dir)
    pure = changed_fraction({k: v.bfloat16() for k, v in before.items()}, model_weights(RunLayout(tmp_path / "pure").model(1)))
    assert pure < 0.5, pure


def test_fp16_trains_with_loss_scaling_on_cpu(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "fp16", fp16=True, save_steps=1, **SMALL_LR))
    after = model_weights(tmp_path / "fp16" / "iter_1" / "model")
    assert changed_fraction(model_weights(tiny_model_dir), after) > 0.5
    assert all(torch.isfinite(v).all() for v in after.values())


def test_every_forward_runs_under_autocast(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """Generation, the reference pass, training and evaluation all see bf16 autocast; step 1's rewards are 0."""
    import json

    from drift.trainer import policy as run_module, train

    seen = []
    real = run_module.load_model

    def recording(path, config, device):
        model = real(path, config, device)
        model.register_forward_pre_hook(
            lambda m, a: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                                      next(m.parameters()).dtype)))
        return model

    monkeypatch.setattr(run_module, "load_model", recording)
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", bf16=True, eval_base=True))
    assert len(seen) > 10
    assert all(on and dt == torch.bfloat16 and master == torch.float32 for on, dt, master in seen), set(seen)
    step1 = [r for r in map(json.loads, RunLayout(tmp_path / "run").metrics.read_text().splitlines())
             if r["kind"] == "step"][0]
    assert step1["step"] == 1 and abs(step1["rewards/chosen"]) < 1e-3 and abs(step1["rewards/rejected"]) < 1e-3


def test_fused_losses_under_cpu_autocast(tiny_model_dir, tiny_data, tmp_path):
    """compute_loss under bf16 autocast: bf16 logits into the fused ops, float32 loss, fp32 gradients."""
    from drift.trainer import compute_loss, load_model
    from test_trainer import _fixed_items, _run

    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path, bf16=True).validate()
    run = _run(cfg)
    model = load_model(tiny_model_dir, cfg, torch.device("cpu"))
    items = _fixed_items(run, "drift")
    fp32 = compute_loss(model, items, "self_play", run)["loss"]
    with run.precision.autocast():
        got = compute_loss(model, items, "self_play", run)
    assert got["loss"].dtype == torch.float32
    assert float(got["loss"]) == pytest.approx(float(fp32), rel=5e-2)
    got["loss"].backward()
    grad = model.model.embed_tokens.weight.grad
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0


# ---- device / dtype decisions, for CUDA too, on a CPU machine ----------------------------------
def _cfg(**kw):
    from drift.trainer import DriftConfig

    return DriftConfig(**kw)


def test_precision_resolution_for_cuda_and_cpu():
    from drift.trainer.precision import resolve_precision

    p = resolve_precision(_cfg(bf16=True), torch.device("cuda", 1), bf16_supported=lambda: True)
    assert (p.mode, p.device_type, p.load_dtype, p.compute_dtype) == ("bf16", "cuda", torch.float32, torch.bfloat16)
    assert p.grad_scaler() is None and p.vllm_dtype == "bfloat16"
    ctx = p.autocast()
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="bf16: this CUDA device has no bfloat16"):
        resolve_precision(_cfg(bf16=True), "cuda:0", bf16_supported=lambda: False)
    p = resolve_precision(_cfg(fp16=True), "cuda:0")
    assert p.compute_dtype == torch.float16 and p.vllm_dtype == "float16"
    p = resolve_precision(_cfg(bf16=True), "cpu")
    assert p.autocast().device == "cpu"
    p = resolve_precision(_cfg(), "cuda:0")
    assert p.mode == "no" and p.compute_dtype is None and p.vllm_dtype == "float32"
    assert resolve_precision(_cfg(dtype="bfloat16"), "cuda").load_dtype == torch.bfloat16


@pytest.mark.parametrize("kw,match", [
    (dict(bf16=True, fp16=True), "bf16: bf16 and fp16 are both set"),
    (dict(bf16=True, dtype="bfloat16"), "bf16: mixed precision keeps float32 master weights"),
    (dict(fp16=True, dtype="float16"), "fp16: mixed precision keeps float32 master weights"),
])
def test_precision_conflicts_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw).validate()


def test_launcher_precision_must_match_the_config():
    from drift.trainer.precision import check_accelerator, resolve_precision

    bf16 = resolve_precision(_cfg(bf16=True), "cuda", bf16_supported=lambda: True)
    check_accelerator(SimpleNamespace(mixed_precision="bf16"), bf16)
    check_accelerator(SimpleNamespace(mixed_precision="no"), bf16)
    with pytest.raises(ValueError, match="set bf16: true"):
        check_accelerator(SimpleNamespace(mixed_precision="bf16"), resolve_precision(_cfg(), "cuda"))


class _StubLM(torch.nn.Module):
    """A causal-LM stand-in whose forward asserts every input is on its parameters' device."""

    def __init__(self, vocab: int, device: torch.device) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 8, device=device)
        self.head = torch.nn.Linear(8, vocab, device=device)

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep, use_cache):
        for t in (input_ids, attention_mask, position_ids):
            assert t.device == self.emb.weight.device, t.device
        return SimpleNamespace(logits=self.head(self.emb(input_ids)[:, -logits_to_keep:]))


def _device_checking_losses(device: torch.device, seen: list):
    """Stand-ins for drift.losses that record every tensor argument's device (the fused ops are CPU/CUDA only)."""

    def tensors(args, kwargs):
        return [x for x in (*args, *kwargs.values()) if isinstance(x, torch.Tensor)]

    def token_logps(logits, labels, mask):
        seen.extend(t.device for t in (logits, labels, mask))
        return torch.zeros(labels.shape, device=logits.device) + logits.sum() * 0

    def drift_loss(*args, **kwargs):
        seen.extend(t.device for t in tensors(args, kwargs))
        z = args[0].sum() * 0
        r = torch.zeros(args[0].shape[0], device=args[0].device)
        return SimpleNamespace(loss=z, self_play_loss=z, oal_loss=z, chosen_rewards=r, rejected_rewards=r, margins=r)

    return SimpleNamespace(token_logps=token_logps, drift_loss=drift_loss)


def test_training_tensors_follow_accelerator_device(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """One step's loss built on the meta device: every tensor the trainer makes must be on accelerator.device."""
    from drift.trainer import compute_loss, objective
    from drift.trainer.metrics_log import MetricsLog
    from drift.trainer.examples import Example, load_tokenizer
    from drift.trainer.policy import Policy
    from drift.trainer.run import Run
    from test_trainer import _fixed_items

    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path).validate()
    meta = torch.device("meta")
    seen: list = []
    monkeypatch.setattr(objective, "losses", _device_checking_losses(meta, seen))
    tok = load_tokenizer(str(tiny_model_dir))
    run = Run(cfg, SimpleNamespace(device=meta), tok, Policy(tiny_model_dir, cfg, meta),
              MetricsLog(Path(os.devnull), False))
    model = _StubLM(len(tok), meta)
    items = _fixed_items(run, "drift")
    for kind, batch in (("self_play", items), ("sft", [Example(it.prompt_ids, it.chosen_ids, "") for it in items])):
        parts = compute_loss(model, batch, kind, run)
        assert all(v.device == meta for v in parts.values()), {k: v.device for k, v in parts.items()}
    assert len(seen) >= 8 and set(seen) == {meta}
