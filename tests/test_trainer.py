"""The DRIFT trainer loop: losses per method against a naive reference, invariances, resume.

Fast tests use a tiny random-init Llama with SmolLM2's tokenizer (tests/conftest.py); the
end-to-end test runs the real SmolLM2-135M-Instruct on a few XSum articles.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import TRAIN_DEPS, model_weights, run_records, tiny_config
from conftest import train_cli as _cli, write_config as _write_yaml
from drift.trainer.layout import RunLayout
from drift.trainer.methods import METHODS, method as method_traits

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")

SELF_PLAY_METHODS = [m for m in METHODS if method_traits(m).self_play]


def _run(config):
    from accelerate import Accelerator

    from drift.trainer.run import open_run

    return open_run(config, config.model_name_or_path, Accelerator(cpu=True))


def _fixed_items(run, method):
    """Four hand-made pairs (prompt, y, y') with partial overlap, fixed reference sums."""
    import drift
    from drift.trainer.batching import SelfPlayExample, self_play_masks
    from drift.trainer.examples import Example
    from drift.trainer.results import Masks

    g = torch.Generator().manual_seed(7)
    eos = run.tokenizer.eos_token_id
    items = []
    for i in range(4):
        prompt = torch.randint(5, 400, (6 + 3 * i,), generator=g).tolist()
        y = torch.randint(5, 60, (4 + i,), generator=g).tolist() + [eos]
        yp = (y[:2] + torch.randint(5, 60, (3 + (i % 2) * 3,), generator=g).tolist() + y[2:-1])[: 9 - i]
        if i == 3:
            yp = list(y)  # identical pair: empty DAM masks
        m = drift.lcs_mask([torch.tensor(y)], [torch.tensor(yp)])
        masks = Masks([list(map(bool, m.y[0]))], [list(map(bool, m.y_prime[0]))], [int(m.lcs_length[0])], 0.0, 0.0)
        cm, rm = self_play_masks(method, Example(prompt, y, ""), yp, masks, 0)
        items.append(SelfPlayExample(prompt, y, yp, list(cm), list(rm), -3.0 - i, -4.5 + 0.5 * i))
    return items


def _naive_token_logps(model, prompt, response):
    """float64 per-token log-probs of ``response`` after ``prompt``: one unpadded sequence, full logits."""
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
    return lp[pos, torch.tensor(response)], lp[pos]


def _naive_loss(model, items, method, beta, oal_weight):
    """The method's loss from METHOD.md, pair by pair, with Python sets and float64 sums."""
    losses_, oals = [], []
    for it in items:
        c, _ = _naive_token_logps(model, it.prompt_ids, it.chosen_ids)
        r, lp_r = _naive_token_logps(model, it.prompt_ids, it.rejected_ids)
        cs = sum(c[j] for j in range(len(c)) if it.chosen_mask[j]) if any(it.chosen_mask) else torch.zeros((), dtype=torch.float64)
        rs = sum(r[j] for j in range(len(r)) if it.rejected_mask[j]) if any(it.rejected_mask) else torch.zeros((), dtype=torch.float64)
        z = beta * ((cs - it.reference_chosen) - (rs - it.reference_rejected))
        losses_.append(torch.log1p(torch.exp(-z)))
        probs = lp_r.exp()  # (m', V) over the generated positions of y'
        targets = set(it.chosen_ids[:-1])  # V(y) without the appended EOS
        oals.append(-sum(torch.log(probs[:, v].max()) for v in targets))
    loss = torch.stack(losses_).mean()
    if method_traits(method).oal:
        loss = loss + oal_weight * torch.stack(oals).mean()
    return loss


@pytest.mark.parametrize("method", SELF_PLAY_METHODS)
def test_loss_matches_naive_reference(tiny_model_dir, tiny_data, tmp_path, method):
    from drift.trainer import compute_loss, load_model

    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path, method=method, beta=0.5, oal_weight=0.7).validate()
    run = _run(cfg)
    model = load_model(tiny_model_dir, cfg, torch.device("cpu"))
    items = _fixed_items(run, method)
    got = compute_loss(model, items, "self_play", run)
    want = _naive_loss(model, items, method, beta=0.5, oal_weight=0.7)
    assert abs(float(got["loss"]) - float(want)) < 1e-4 * max(1.0, abs(float(want)))
    if not method_traits(method).oal:
        assert float(got["oal_loss"]) == 0.0
    else:
        assert float(got["oal_loss"]) > 0.0
    # gradients flow to the weights
    got["loss"].backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_dam_masks_change_the_loss(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import compute_loss, load_model

    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path, method="drift_no_oal").validate()
    run = _run(cfg)
    model = load_model(tiny_model_dir, cfg, torch.device("cpu"))
    dam = compute_loss(model, _fixed_items(run, "drift_no_oal"), "self_play", run)["loss"]
    full = compute_loss(model, _fixed_items(run, "spin"), "self_play", run)["loss"]
    assert abs(float(dam) - float(full)) > 1e-6


def test_sft_loss_is_mean_token_nll(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import compute_loss, load_model
    from drift.trainer.examples import Example

    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path, method="sft").validate()
    run = _run(cfg)
    model = load_model(tiny_model_dir, cfg, torch.device("cpu"))
    pairs = [Example(it.prompt_ids, it.chosen_ids, "") for it in _fixed_items(run, "spin")]
    got = compute_loss(model, pairs, "sft", run)["loss"]
    nll = [-_naive_token_logps(model, p.prompt_ids, p.response_ids)[0] for p in pairs]
    want = torch.cat(nll).mean()
    assert abs(float(got) - float(want)) < 1e-4 * max(1.0, float(want))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_one_iteration(tiny_model_dir, tiny_data, tmp_path, method):
    from drift.trainer import train

    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", method=method)
    records = train(cfg)
    assert [r["iteration"] for r in records] == [1]
    rec = records[0]
    for k in ("rouge1", "rouge2", "rougeL", "train_s"):
        assert k in rec and rec[k] >= 0
    steps = run_records(tmp_path / "run", "step")
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    if method != "sft":
        assert 0.0 <= rec["gamma"] <= 1.0
        for k in ("self_play_loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "lr", "tokens_per_s"):
            assert k in steps[0]
        assert ("oal_loss" in steps[0]) == method_traits(method).oal  # absent where not computed
        assert abs(steps[0]["rewards/margins"] - (steps[0]["rewards/chosen"] - steps[0]["rewards/rejected"])) < 1e-5
        # the policy starts as the reference: zero rewards at step 1
        assert abs(steps[0]["rewards/chosen"]) < 1e-3 and abs(steps[0]["rewards/rejected"]) < 1e-3
        run = RunLayout(tmp_path / "run")
        for path in (run.generations(1), run.masks(1), run.reference(1), run.eval_json(1)):
            assert path.is_file(), path
    before, after = model_weights(tiny_model_dir), model_weights(RunLayout(tmp_path / "run").model(1))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_gradient_accumulation_invariance(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "a", per_device_train_batch_size=4,
                      gradient_accumulation_steps=1, lr_scheduler_type="constant", learning_rate=1e-4))
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "b", per_device_train_batch_size=2,
                      gradient_accumulation_steps=2, lr_scheduler_type="constant", learning_rate=1e-4))
    sa, sb = run_records(tmp_path / "a", "step"), run_records(tmp_path / "b", "step")
    assert len(sa) == len(sb) == 2
    for ra, rb in zip(sa, sb):
        for k in ("loss", "self_play_loss", "oal_loss", "rewards/margins"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), k
    wa, wb = model_weights(RunLayout(tmp_path / "a").model(1)), model_weights(RunLayout(tmp_path / "b").model(1))
    start = model_weights(tiny_model_dir)
    for k in wa:
        moved = (wa[k] - start[k]).abs().max()
        assert (wa[k] - wb[k]).abs().max() <= 1e-2 * max(float(moved), 1e-12) + 1e-7, k


def test_extra_epochs_on_fixed_data_reuses_iteration_one(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    records = train(tiny_config(tiny_model_dir, tiny_data, tmp_path, extra_epochs_on_fixed_data=2))
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert not RunLayout(tmp_path).generations(2).exists()
    assert records[1]["gamma"] == records[0]["gamma"] == records[2]["gamma"]


def _accelerate_available() -> bool:
    import shutil

    return shutil.which("accelerate") is not None or (Path(sys.executable).parent / "accelerate").exists()


@pytest.mark.slow
@pytest.mark.skipif(not _accelerate_available(), reason="needs the accelerate launcher")
def test_two_processes_equal_one_process_with_doubled_accumulation(tiny_model_dir, tiny_data, tmp_path):
    one = _write_yaml(tmp_path / "one.yaml", tiny_config(tiny_model_dir, tiny_data, tmp_path / "one",
                                                          gradient_accumulation_steps=2, iterations=2))
    two = _write_yaml(tmp_path / "two.yaml", tiny_config(tiny_model_dir, tiny_data, tmp_path / "two",
                                                          gradient_accumulation_steps=1, iterations=2))
    r1 = _cli(one)
    assert r1.returncode == 0, r1.stderr[-3000:]
    launcher = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
    r2 = _cli(two, {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}, launcher=launcher)
    assert r2.returncode == 0, r2.stderr[-3000:]
    ga = torch.load(RunLayout(tmp_path / "one").generations(1), weights_only=False)["ids"]
    gb = torch.load(RunLayout(tmp_path / "two").generations(1), weights_only=False)["ids"]
    assert ga == gb
    sa, sb = run_records(tmp_path / "one", "step"), run_records(tmp_path / "two", "step")
    assert len(sa) == len(sb) == 4
    for ra, rb in zip(sa, sb):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4, abs=1e-5)
    wa, wb = model_weights(RunLayout(tmp_path / "one").model(2)), model_weights(RunLayout(tmp_path / "two").model(2))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-3, atol=1e-5), k


@pytest.mark.slow
def test_end_to_end_smollm2_xsum(smollm2_dir, tmp_path):
    from drift.plot import plot_runs
    from drift.trainer import DriftConfig, train

    cfg = DriftConfig(data="xsum", output_dir=str(tmp_path / "run"), num_train_examples=4, num_eval_examples=2,
                      max_prompt_length=48, max_response_length=16, max_new_tokens=6, per_device_train_batch_size=2,
                      per_device_eval_batch_size=4, iterations=1, learning_rate=1e-5, warmup_ratio=0.0, eval_base=True)
    records = train(cfg)
    assert [r["stage"] for r in records] == ["base", "iter_1"]
    assert all(0 <= r["rouge1"] <= 100 for r in records)
    preds = json.loads(RunLayout(tmp_path / "run").eval_json(1).read_text())["predictions"]
    assert len(preds) == 2 and any(p.strip() for p in preds)  # a real model writes words
    steps = run_records(tmp_path / "run", "step")
    assert len(steps) == 2 and all(s["loss"] > 0 for s in steps)
    png = plot_runs([tmp_path / "run"], tmp_path / "rouge.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lora_iteration_merges_adapters(tiny_model_dir, tiny_data, tmp_path):
    pytest.importorskip("peft")
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path, use_peft=True, lora_r=4, lora_alpha=8, lora_save_merged=True))
    after = model_weights(RunLayout(tmp_path).model(1))
    before = model_weights(tiny_model_dir)
    assert after.keys() == before.keys()  # a plain (merged) model, no adapter tensors
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("proj" in k for k in changed)  # only LoRA-adapted projections moved


def test_metrics_log_cuts_a_torn_line_so_the_log_stays_json_lines(tmp_path):
    import json

    from drift.trainer.metrics_log import MetricsLog

    path = tmp_path / "m.jsonl"
    log = MetricsLog(path)
    log.append({"kind": "step", "step": 1})
    with open(path, "a") as f:
        f.write('{"kind": "step", "st')  # killed mid-write
    assert [r["step"] for r in log.records()] == [1]  # the reader skips it meanwhile
    MetricsLog(path).append({"kind": "step", "step": 2})  # a resumed run opens the log again
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]  # every line valid
    log.drop(lambda r: r["step"] == 2)
    assert [r["step"] for r in log.records()] == [1]


def test_metrics_log_ends_a_last_line_that_lost_only_its_newline(tmp_path):
    import json

    from drift.trainer.metrics_log import MetricsLog

    path = tmp_path / "m.jsonl"
    path.write_text('{"kind": "step", "step": 1}')  # complete record, newline not written
    MetricsLog(path).append({"kind": "step", "step": 2})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_read_metrics_last_copy_of_a_record_wins_where_the_first_stood(tmp_path):
    from drift.trainer.metrics_log import read_metrics

    path = tmp_path / "m.jsonl"
    path.write_text('{"kind": "data"}\n{"kind": "step", "iteration": 1, "step": 1, "loss": 1}\n'
                    '{"kind": "iteration", "iteration": 1}\n{"kind": "step", "iteration": 1, "step": 1, "loss": 2}\n'
                    '{"kind": "st\n')
    assert [(r["kind"], r.get("loss")) for r in read_metrics(path)] == [("data", None), ("step", 2), ("iteration", None)]
    assert [r["loss"] for r in read_metrics(path, "step")] == [2]
    assert read_metrics(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize("method", SELF_PLAY_METHODS)
def test_loss_matches_drift_reference_on_the_trainer_batch(tiny_model_dir, tiny_data, tmp_path, method):
    """The trainer's batch, masks and OAL targets fed to drift.reference.drift_loss (float64)."""
    from drift import reference
    from drift.trainer import compute_loss, load_model
    from drift.trainer.batching import response_logits, self_play_batch
    from drift.trainer.objective import oal_target_mask

    if not hasattr(reference, "drift_loss"):
        pytest.skip("drift.reference.drift_loss not available")
    cfg = tiny_config(tiny_model_dir, tiny_data, tmp_path, method=method, beta=0.2, oal_weight=0.5).validate()
    run = _run(cfg)
    model = load_model(tiny_model_dir, cfg, torch.device("cpu"))
    items = _fixed_items(run, method)
    got = compute_loss(model, items, "self_play", run)
    b, cm, rm = self_play_batch(items, run.tokenizer.pad_token_id, torch.device("cpu"))
    n = len(items)
    with torch.no_grad():
        logits = response_logits(model, b).double()
    ref_c = torch.tensor([it.reference_chosen for it in items], dtype=torch.float64)
    ref_r = torch.tensor([it.reference_rejected for it in items], dtype=torch.float64)
    want = reference.drift_loss(
        logits[:n], b.labels[:n], cm, logits[n:], b.labels[n:], rm, ref_c, ref_r, oal_targets=b.labels[:n],
        oal_targets_mask=oal_target_mask(items, b.response_mask[:n], run.tokenizer.eos_token_id),
        rejected_response_mask=b.response_mask[n:], beta=0.2,
        oal_weight=0.5 if method_traits(method).oal else 0.0,
    )
    assert float(got["loss"]) == pytest.approx(float(want[0]), rel=1e-5, abs=1e-5)
    assert float(got["self_play_loss"]) == pytest.approx(float(want[1]), rel=1e-5, abs=1e-6)
    assert float(got["rewards/margins"]) == pytest.approx(float(want[5].mean()), rel=1e-4, abs=1e-6)


def test_iteration_records_carry_the_mechanism_diagnostics(tiny_model_dir, tiny_data, tmp_path):
    """eval_diagnostics (default on): each evaluated stage logs diag_* from its own held-out
    generations, equal to drift.diagnostics recomputed from eval.json's stage; off: none."""
    import json

    from drift.trainer import train

    records = train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "on"))
    rec = records[-1]
    for k in ("diag_logp_difference", "diag_logp_lcs", "diag_vocab_recall", "diag_vocab_precision"):
        assert k in rec
    assert rec["diag_pairs"] > 0
    assert rec["diag_vocab_recall"] is None or 0.0 <= rec["diag_vocab_recall"] <= 1.0
    for k in ("logp_difference", "logp_lcs"):
        assert rec[f"diag_{k}"] is None or rec[f"diag_{k}"] <= 0.0  # mean log-probs
    ev = json.loads(RunLayout(tmp_path / "on").eval_json(1).read_text())
    assert ev["diagnostics"]["vocab_recall"] == rec["diag_vocab_recall"]
    off = train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "off", eval_diagnostics=False))
    assert not any(k.startswith("diag_") for k in off[-1])
