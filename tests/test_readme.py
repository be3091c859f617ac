"""README examples run as written (a README that lies is a bug)."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(tag: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- readme-example: {tag} .*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README block {tag!r} not found"
    return match.group(1)


def test_own_loop_example_runs_and_trains(capsys):
    namespace: dict = {}
    exec(compile(readme_block("own-loop"), "README.md:own-loop", "exec"), namespace)
    out = namespace["out"]
    # policy == reference before the step: every margin is 0 and the self-play loss is log 2
    assert torch.allclose(out.margins, torch.zeros_like(out.margins))
    assert math.isclose(out.self_play_loss.item(), math.log(2), rel_tol=1e-6)
    assert out.oal_loss.item() > 0
    assert math.isclose(out.loss.item(), out.self_play_loss.item() + out.oal_loss.item(), rel_tol=1e-6)
    grads = [p.grad for p in namespace["model"].parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert "loss" in capsys.readouterr().out


def test_own_loop_example_computes_the_papers_objective(capsys):
    """The printed loss is L_DAM + L_OAL of METHOD.md section 3 in float64 (drift.reference), with the
    paper's OAL: V(y) every token of y, the max over every position of y' (not the DAM masks)."""
    from transformers import LlamaForCausalLM

    from drift import reference

    namespace: dict = {}
    exec(compile(readme_block("own-loop"), "README.md:own-loop", "exec"), namespace)
    printed = capsys.readouterr().out
    torch.manual_seed(0)  # the example's model before its optimizer step
    model = LlamaForCausalLM(namespace["model"].config)
    y, y_gen, masks, logits_of = namespace["y"], namespace["y_gen"], namespace["masks"], namespace["response_logits"]
    with torch.no_grad():
        chosen, rejected = logits_of(model, y).double(), logits_of(model, y_gen).double()
    ref_c = reference.token_logps(chosen, y, masks.y).sum(-1)
    ref_r = reference.token_logps(rejected, y_gen, masks.y_prime).sum(-1)
    dam = reference.dam_loss(reference.token_logps(chosen, y, masks.y), reference.token_logps(rejected, y_gen, masks.y_prime),
                             ref_c, ref_r, masks.y, masks.y_prime, beta=0.1)[0]
    oal = reference.oal_loss(rejected, y)  # every target id, every position: METHOD.md section 2
    want = float(dam + 1.0 * oal)
    out = namespace["out"]
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    assert out.oal_loss.item() == pytest.approx(float(oal), rel=1e-5)
    assert f"loss {want:.4f} = DAM {float(dam):.4f} + OAL {float(oal):.4f}" in printed
    # the difference tokens alone (the old default) would give another OAL
    assert masks.y.sum() < masks.y.numel()
    assert float(reference.oal_loss(rejected, y, targets_mask=masks.y, logits_mask=masks.y_prime)) != pytest.approx(float(oal), rel=1e-3)


def test_lcs_example_output_is_what_readme_says():
    import drift

    y = torch.tensor([[5, 8, 2, 9, 4, 0, 0]])
    y_prime = torch.tensor([[5, 2, 7, 9, 4, 4, 0]])
    masks = drift.lcs_mask(y, y_prime, pad_id=0)
    text = README.read_text()
    assert str(masks.y).replace("\n", "") in text.replace("\n", "")
    assert str(masks.y_prime) in text
    assert str(masks.lcs_length) in text


def test_train_commands_are_valid_cli_calls(capsys):
    """Every `drift train` line of README's bash blocks parses and resolves to a valid config."""
    from conftest import TRAIN_DEPS

    if not TRAIN_DEPS:
        pytest.skip("needs the train extras (transformers, accelerate, ...)")
    from drift.cli import _base_settings, build_parser
    from drift.trainer import config_from_args

    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [ln for b in blocks for ln in b.splitlines() if ln.startswith("drift train")]
    assert len(lines) >= 2, lines  # the demo and the own-data example
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        config_from_args(args, _base_settings(args, "train")).validate()
