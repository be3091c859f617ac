"""The experimental vLLM generation road, checked against a stub of vLLM's API (vLLM itself is not installed where
drift is tested): each prompt generated once across processes, in order, from the saved policy, within its
share of GPU memory."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import TRAIN_DEPS

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")

EOS = 7

STUB = '''
import json, os

class SamplingParams:
    def __init__(self, **kw):
        self.kw = kw

class _Out:
    def __init__(self, ids):
        self.outputs = [type("C", (), {"token_ids": ids})()]

class LLM:
    def __init__(self, **kw):
        self.kw = kw

    def generate(self, prompts, params):
        with open(os.environ["VLLM_STUB_LOG"], "a") as f:
            f.write(json.dumps({"llm": self.kw, "params": params.kw, "prompts": prompts}) + "\\n")
        # a deterministic answer per prompt: its first id, its length, then EOS and a trailing token
        return [_Out([p["prompt_token_ids"][0], len(p["prompt_token_ids"]), %d, 99]) for p in prompts]
''' % EOS


@pytest.fixture
def stub_vllm(tmp_path, monkeypatch):
    """A ``vllm`` module that logs every call to ``VLLM_STUB_LOG``; returns the log's records."""
    (tmp_path / "stub" / "vllm").mkdir(parents=True)
    (tmp_path / "stub" / "vllm" / "__init__.py").write_text(STUB)
    monkeypatch.syspath_prepend(str(tmp_path / "stub"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    log = tmp_path / "vllm.jsonl"
    monkeypatch.setenv("VLLM_STUB_LOG", str(log))
    return lambda: [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []


def _run(config, rank: int, world: int, policy: Path):
    return SimpleNamespace(config=config, accelerator=SimpleNamespace(process_index=rank, num_processes=world),
                           tokenizer=SimpleNamespace(eos_token_id=EOS), policy=SimpleNamespace(path=policy),
                           precision=SimpleNamespace(vllm_dtype="float32"))


def test_vllm_road_generates_each_prompt_once_across_processes_in_order(stub_vllm, tmp_path):
    from drift.trainer import generation
    from drift.trainer.config import DriftConfig

    cfg = DriftConfig(generation_backend="vllm", max_new_tokens=7, temperature=0.9, top_p=0.8).validate()
    prompts = [[10 + i] * (1 + i % 3) for i in range(7)]
    results = []
    for rank in range(3):
        results += generation.vllm_results(_run(cfg, rank, 3, tmp_path / "policy"), prompts, sample=True, seed=5)
    calls = stub_vllm()
    generated = [p["prompt_token_ids"] for c in calls for p in c["prompts"]]
    assert sorted(map(tuple, generated)) == sorted(map(tuple, prompts))  # each prompt once, by one process
    assert [len(c["prompts"]) for c in calls] == [3, 2, 2]
    assert sorted(i for i, _ in results) == list(range(7))
    for i, ids in results:  # each answer belongs to its prompt, cut after EOS
        assert ids == [prompts[i][0], len(prompts[i]), EOS]
    for c in calls:
        assert c["llm"]["model"] == str(tmp_path / "policy") and c["llm"]["seed"] == 5
        assert c["llm"]["gpu_memory_utilization"] == generation.VLLM_MEMORY_FRACTION <= 0.5
        assert c["params"] == {"max_tokens": 7, "temperature": 0.9, "top_p": 0.8, "seed": 5}


def test_vllm_road_on_one_process_returns_answers_in_prompt_order_greedy(stub_vllm, tmp_path):
    from accelerate import Accelerator

    from drift.trainer import generation
    from drift.trainer.config import DriftConfig

    cfg = DriftConfig(generation_backend="vllm", max_new_tokens=4).validate()
    run = _run(cfg, 0, 1, tmp_path / "policy")
    run.accelerator = Accelerator(cpu=True)
    prompts = [[30], [31, 31], [32, 32, 32]]
    out = generation.generate(run, None, prompts, sample=False, seed=0, desc="eval")
    assert out == [[30, 1, EOS], [31, 2, EOS], [32, 3, EOS]]
    (call,) = stub_vllm()
    assert call["params"]["temperature"] == 0.0 and call["params"]["top_p"] == 1.0


def test_vllm_road_is_refused_with_eval_steps_and_marked_experimental(stub_vllm):
    from drift.trainer.config import DriftConfig

    with pytest.raises(ValueError, match="eval_steps: generation_backend 'vllm'"):
        DriftConfig(generation_backend="vllm", eval_steps=2).validate()
    assert "experimental" in DriftConfig.__dataclass_fields__["generation_backend"].metadata["help"]
