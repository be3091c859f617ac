"""LoRA stages load right elsewhere: PEFT's own loader and drift's load_model build the model drift trained.

Iteration 2 of a LoRA run trains on the base with iteration 1's adapter merged in; its saved
adapter must carry iteration 1 too (a stacked adapter against the original base), its base
path must not depend on the working directory, and drift's own loader must still merge the
adapters one by one, as training did.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from conftest import tiny_config

pytest.importorskip("peft")

R, ALPHA = 4, 8
KW = dict(use_peft=True, lora_r=R, lora_alpha=ALPHA, iterations=2, learning_rate=1e-2)
IDS = torch.tensor([[1, 5, 9, 200, 31, 77, 4, 8, 1000, 12]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS).logits


def _adapter(folder):
    from safetensors.torch import load_file

    return json.loads((folder / "adapter_config.json").read_text()), load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tiny_data, tmp_path_factory):
    """A 2-iteration LoRA run trained from a working directory where the model is the relative path ``my-model``."""
    from drift.trainer import train

    work = tmp_path_factory.mktemp("work")
    shutil.copytree(tiny_model_dir, work / "my-model")
    cwd = os.getcwd()
    try:
        os.chdir(work)
        train(tiny_config("my-model", tiny_data, "runs/lora", **KW))
    finally:
        os.chdir(cwd)
    return work, tiny_config(work / "my-model", tiny_data, work / "runs/lora", **KW)


def test_peft_loader_builds_the_model_drift_trained_from_any_folder(lora_run, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    from drift.trainer import load_model
    from drift.trainer.layout import RunLayout

    work, cfg = lora_run
    monkeypatch.chdir(tmp_path)  # another working directory: "my-model" means nothing here
    run = RunLayout(work / "runs/lora")
    config, _ = _adapter(run.model(2))
    assert config["base_model_name_or_path"] == str((work / "my-model").resolve())
    assert (config["r"], config["lora_alpha"]) == (2 * R, 2 * ALPHA)  # two stacked pieces, the same scaling
    card = (run.model(2) / "README.md").read_text()  # the model card's metadata names the same base
    base = config["base_model_name_or_path"]
    assert f"base_model: {base}\n" in card and "my-model\n" not in card.replace(base, "")
    for k in (1, 2):
        drift_logits = _logits(load_model(run.model(k), cfg, torch.device("cpu")))
        peft_logits = _logits(AutoPeftModelForCausalLM.from_pretrained(str(run.model(k))))
        assert torch.allclose(peft_logits, drift_logits, rtol=1e-5, atol=1e-5), (peft_logits - drift_logits).abs().max()
    # what the adapter alone of iteration 2 builds (iteration 1 left out) is far from it: the check can fail
    own = run.model(2) / "own"
    own.mkdir()
    _, stacked = _adapter(run.model(2))
    from safetensors.torch import save_file

    save_file({k: (v[R:] if ".lora_A." in k else v[:, R:]).contiguous() for k, v in stacked.items()},
              str(own / "adapter_model.safetensors"))
    (own / "adapter_config.json").write_text(json.dumps({**config, "r": R, "lora_alpha": ALPHA}))
    alone = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(work / "my-model")), str(own)))
    assert (alone - drift_logits).abs().max() > 1e-3


def test_drift_loader_merges_the_pieces_in_order_bit_for_bit(lora_run):
    from transformers import AutoModelForCausalLM

    from drift.trainer import load_model
    from drift.trainer.layout import RunLayout

    work, cfg = lora_run
    run = RunLayout(work / "runs/lora")
    _, first = _adapter(run.model(1))
    _, stacked = _adapter(run.model(2))
    for k, v in first.items():  # iteration 2's adapter starts with iteration 1's, unchanged
        assert torch.equal(v, stacked[k][:R] if ".lora_A." in k else stacked[k][:, :R]), k
    # the reference: W_2 = (W_0 + s B_1 A_1) + s B_2 A_2, merged in that order, as training did
    want = AutoModelForCausalLM.from_pretrained(str(work / "my-model")).state_dict()
    s = ALPHA / R
    for piece in (slice(0, R), slice(R, 2 * R)):
        for k in stacked:
            if ".lora_A." in k:
                name = k.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
                b = stacked[k.replace(".lora_A.", ".lora_B.")][:, piece].contiguous()
                want[name] = want[name] + (b @ stacked[k][piece].contiguous()) * s
    got = load_model(run.model(2), cfg, torch.device("cpu")).state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_folders_written_before_stacking_still_load_and_extend(lora_run, tmp_path):
    """The earlier layout: each stage's own adapter, and a lineage of relative folders to merge in order."""
    from safetensors.torch import save_file

    from drift.trainer import load_model, lora
    from drift.trainer.layout import LINEAGE_FILE, RunLayout

    work, cfg = lora_run
    run, old = RunLayout(work / "runs/lora"), RunLayout(tmp_path / "old")
    config, stacked = _adapter(run.model(2))
    base = str((work / "my-model").resolve())
    for k, chain in ((1, ["."]), (2, ["../../iter_1/model", "."])):
        d = old.model(k)
        d.mkdir(parents=True)
        piece = slice((k - 1) * R, k * R)
        save_file({n: (v[piece] if ".lora_A." in n else v[:, piece]).contiguous() for n, v in stacked.items()},
                  str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps({**config, "r": R, "lora_alpha": ALPHA,
                                                           "base_model_name_or_path": "my-model"}))
        (d / LINEAGE_FILE).write_text(json.dumps({"base_model": base, "adapters": chain}))
    got = load_model(old.model(2), cfg, torch.device("cpu")).state_dict()
    want = load_model(run.model(2), cfg, torch.device("cpu")).state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    # a later stage trained on an old folder stacks its adapters like a new one
    (old_base, old_pieces), (new_base, new_pieces) = lora.pieces(old.model(2)), lora.pieces(run.model(2))
    assert old_base == new_base == base and [i for i, _ in old_pieces] == [i for i, _ in new_pieces]
    for (_, a), (_, b) in zip(old_pieces, new_pieces):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_total_limit_prunes_stacked_adapters(tiny_model_dir, tiny_data, tmp_path):
    from peft import AutoPeftModelForCausalLM

    from drift.trainer import load_model, train
    from drift.trainer.layout import RunLayout

    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", save_total_limit=1, **KW)
    train(cfg)
    run = RunLayout(tmp_path / "run")
    assert not run.model(1).exists() and run.files(1).pruned.is_file()  # iteration 2 needs nothing of iteration 1's
    drift_logits = _logits(load_model(run.model(2), cfg, torch.device("cpu")))
    peft_logits = _logits(AutoPeftModelForCausalLM.from_pretrained(str(run.model(2))))
    assert torch.allclose(peft_logits, drift_logits, rtol=1e-5, atol=1e-5)
