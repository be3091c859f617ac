"""Next to TRL: loss_type, max_steps, the in-memory Python API, conversational data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TRAIN_DEPS, run_records, tiny_config
from drift.trainer.layout import RunLayout

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


def _naive(loss_type: str, h: torch.Tensor, beta: float) -> torch.Tensor:
    """The per-pair losses written out from their papers (float64, no shared code with the trainer)."""
    if loss_type == "sigmoid":  # SPIN / DPO: log(1 + exp(-beta h))
        return torch.log1p(torch.exp(-beta * h))
    if loss_type == "hinge":  # SLiC: max(0, 1 - beta h)
        return torch.clamp(1 - beta * h, min=0)
    return (h - 1 / (2 * beta)) ** 2  # IPO


@pytest.mark.parametrize("method", ["drift", "spin"])
@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_loss_type_matches_a_float64_reference(tiny_model_dir, tiny_data, tmp_path, loss_type, method):
    from drift.trainer import compute_loss, load_model
    from test_trainer import _fixed_items, _naive_token_logps, _run

    beta, lam = 0.5, 0.7
    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path, method=method, beta=beta, oal_weight=lam,
                      loss_type=loss_type).validate()
    run = _run(cfg)
    model = load_model(tiny_model_dir, cfg, torch.device("cpu"))
    items = _fixed_items(run, method)
    got = compute_loss(model, items, "self_play", run)
    per_pair, oals = [], []
    for it in items:
        c, _ = _naive_token_logps(model, it.prompt_ids, it.chosen_ids)
        r, lp_r = _naive_token_logps(model, it.prompt_ids, it.rejected_ids)
        cs = sum((c[j] for j in range(len(c)) if it.chosen_mask[j]), torch.zeros((), dtype=torch.float64))
        rs = sum((r[j] for j in range(len(r)) if it.rejected_mask[j]), torch.zeros((), dtype=torch.float64))
        h = (cs - it.reference_chosen) - (rs - it.reference_rejected)
        per_pair.append(_naive(loss_type, h, beta))
        probs = lp_r.exp()
        oals.append(-sum(torch.log(probs[:, v].max()) for v in set(it.chosen_ids[:-1])))
    want_sp = torch.stack(per_pair).mean()
    want = want_sp + (lam * torch.stack(oals).mean() if method == "drift" else 0)
    assert float(got["self_play_loss"]) == pytest.approx(float(want_sp), rel=1e-4, abs=1e-5)
    assert float(got["loss"]) == pytest.approx(float(want), rel=1e-4, abs=1e-5)
    got["loss"].backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_loss_types_differ_and_are_validated(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import DriftConfig

    with pytest.raises(ValueError, match="loss_type"):
        DriftConfig(loss_type="kto").validate()
    with pytest.raises(ValueError, match="max_steps"):
        DriftConfig(max_steps=0).validate()


def test_max_steps_overrides_epochs(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=6, iterations=2))
    steps = run_records(tmp_path / "run", "step")
    assert [s["step"] for s in steps if s["iteration"] == 1] == [1, 2, 3, 4, 5, 6]  # 4 per epoch: into epoch 2
    assert steps[5]["epoch"] == pytest.approx(1.5)
    assert [r["global_step"] for r in run_records(tmp_path / "run", "iteration")] == [6, 12]


def _chat_rows(path: Path):
    rows = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows.append({"messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": r["prompt"]},
                                  {"role": "assistant", "content": r["response"]}]})
    return rows


def test_messages_rows_use_the_whole_conversation(tiny_model_dir, tiny_data, tmp_path):
    from drift import data
    from drift.trainer import DriftConfig
    from drift.trainer.examples import encode, load_tokenizer

    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _chat_rows(tiny_data)))
    rows = data.read_rows(path, "prompt", "response")
    first = json.loads(tiny_data.read_text().splitlines()[0])
    assert (rows[0].prompt, rows[0].response) == (first["prompt"], first["response"])
    assert rows[0].messages == (("system", "Be brief."), ("user", first["prompt"]))
    tok = load_tokenizer(str(tiny_model_dir))
    pair = encode(tok, rows[0], DriftConfig(max_prompt_length=512), None)
    want = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": first["prompt"]}], add_generation_prompt=True)
    assert pair.prompt_ids == list(want["input_ids"] if hasattr(want, "keys") else want)


def test_python_api_with_in_memory_model_tokenizer_and_dataset(tiny_model_dir, tiny_data, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import drift

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ds = datasets.Dataset.from_list(_chat_rows(tiny_data))
    cfg = tiny_config(tiny_model_dir, "xsum", tmp_path / "run", model_name_or_path=None)
    records = drift.train(model=model, tokenizer=tokenizer, train_dataset=ds, config=cfg)
    assert [r["iteration"] for r in records] == [1] and records.output_dir == tmp_path / "run"
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data"] == "in_memory" and stored["model_name_or_path"] == str(tiny_model_dir)
    assert (RunLayout(tmp_path / "run").model(1) / "model.safetensors").is_file()
    # rerun with the same objects: resumes (nothing to do)
    again = drift.train(model=model, tokenizer=tokenizer, train_dataset=ds, config=cfg)
    assert [r["iteration"] for r in again] == [1]
    with pytest.raises(TypeError, match="train_dataset: expected a datasets.Dataset"):
        drift.train(model=model, train_dataset="pairs.jsonl", config=cfg)


def test_precomputed_opponent_generations(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    from drift.trainer import generation, train
    from drift.trainer.examples import load_tokenizer

    rows = [json.loads(x) for x in tiny_data.read_text().splitlines()]
    gens = tmp_path / "gens.jsonl"
    gens.write_text("".join(json.dumps({"prompt": r["prompt"], "generation": "the cat sat on a mat"}) + "\n"
                            for r in rows))
    calls = []
    real = generation.generate
    monkeypatch.setattr(generation, "generate", lambda run, model, prompts, **kw: calls.append(kw["desc"]) or real(
        run, model, prompts, **kw))
    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", iterations=2, opponent_generations=str(gens))
    train(cfg)
    assert not any("iter_1: generate" in c for c in calls) and any("iter_2: generate" in c for c in calls)
    tok = load_tokenizer(str(tiny_model_dir))
    want = tok("the cat sat on a mat", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    stored = torch.load(RunLayout(tmp_path / "run").generations(1), weights_only=False)["ids"]
    assert len(stored) == 8 and all(ids == want for ids in stored)
    gens.write_text(gens.read_text().replace("mat", "rug"))
    with pytest.raises(ValueError, match="opponent_generations: the content"):
        train(cfg)
    gens.write_text(json.dumps({"prompt": "nothing", "generation": "x"}) + "\n")
    with pytest.raises(ValueError, match="opponent_generations: .* has no generation for 8 of 8"):
        train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "other", opponent_generations=str(gens)))
