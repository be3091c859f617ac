"""The offline GPU check (driven by scripts/gpu_check.sh) and the renderer of its results table.

    python3 scripts/gpu_check.py run [--bundle DIR] [--out DIR] [--skip STEP,...] [--budget S]
    python3 scripts/gpu_check.py render [--summary docs/results/gpu_check.json] [--doc docs/GPU.md] [--check]
    python3 scripts/gpu_check.py steps

``run`` executes the steps of :data:`STEPS` in order, each in a subprocess with its own
timeout (capped by what is left of ``--budget``, 470 s by default, so that the whole check
stays under 8 minutes); a failing or timed-out step is recorded and the next one runs. All
output goes to ONE log (``<out>/gpu_check.log``) and ``<out>/summary.json`` is rewritten after
every step (so a killed run still leaves a summary). Exit status: 0 when every step that ran
passed, else 1 (2 on bad arguments).

``render`` replaces the block between ``<!-- gpu-check:begin -->`` and
``<!-- gpu-check:end -->`` of the doc with tables generated from a summary (or "no run yet"
when the summary file does not exist); ``--check`` only compares and exits 1 when stale.

Standard library only: the step runner must work before any bundle wheel is installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = 1
DEFAULT_BUDGET_S = 470.0  # <= 8 minutes with the interpreter's start and the summary
DEFAULT_SUMMARY = ROOT / "docs" / "results" / "gpu_check.json"
DEFAULT_DOC = ROOT / "docs" / "GPU.md"
BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
SANITIZER_TESTS = "tests/test_cuda_kernels.py"
SMOKE_TEST = "tests/test_trainer_gpu.py"
#: The goals the key numbers are held to: (key, comparison, bound).
GOALS = (
    ("oal_floor_ratio", "<=", 2.0),
    ("token_logps_floor_ratio", "<=", 2.0),
    ("lcs_cuda_vs_cpu", ">=", 10.0),
)


# =============================================================================================
# arguments
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the check (on a GPU machine)")
    run.add_argument("--bundle", default=os.environ.get("DRIFT_GPU_BUNDLE", str(ROOT / "build" / "gpu-bundle")),
                     help="the bundle scripts/gpu_bundle.sh prepared (wheels/, model/, data/)")
    run.add_argument("--out", default=str(ROOT / "build" / "gpu-check"), help="folder for gpu_check.log and summary.json")
    run.add_argument("--skip", default="", help=f"comma-separated steps to skip, of: {','.join(s.name for s in STEPS)}")
    run.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all steps together")
    run.add_argument("--python", default=sys.executable, help="the interpreter that runs the steps")
    run.add_argument("--dry-run", action="store_true", help="print each step's command, run nothing")
    render = sub.add_parser("render", help="write the results table into the doc")
    render.add_argument("--summary", default=str(DEFAULT_SUMMARY), help="summary JSON (missing: 'no run yet')")
    render.add_argument("--doc", default=str(DEFAULT_DOC))
    render.add_argument("--check", action="store_true", help="exit 1 if the doc's block is not up to date")
    sub.add_parser("steps", help="list the steps")
    args = ap.parse_args(argv)
    if args.command == "run":
        names = [s.name for s in STEPS]
        args.skip = [x.strip() for x in args.skip.split(",") if x.strip()]
        unknown = [x for x in args.skip if x not in names]
        if unknown:
            ap.error(f"--skip: unknown step(s) {', '.join(unknown)}; the steps are {', '.join(names)}")
        if args.budget <= 0:
            ap.error("--budget: expected > 0 seconds")
    return args


# =============================================================================================
# parsers of the steps' output (pure functions: tested on the CPU)
_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b")


def parse_pytest(text: str) -> Dict[str, int]:
    """Counts from pytest's last summary line ("3 passed, 1 skipped in 2.0s"); zeros when absent."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for line in reversed(text.splitlines()):
        if re.search(r"\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b.* in [\d.:]+", line):
            for n, kind in _PYTEST_COUNT.findall(line):
                key = "errors" if kind.startswith("error") else kind
                counts[key] = counts.get(key, 0) + int(n)
            break
    return counts


def parse_sanitizer(text: str) -> Optional[int]:
    """Errors a compute-sanitizer run reported (summed over its summaries); None without a summary.

    memcheck/synccheck/initcheck print ``ERROR SUMMARY: N errors``; racecheck prints
    ``RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)``, of which the hazards count.
    """
    total, seen = 0, False
    for m in re.finditer(r"ERROR SUMMARY: (\d+) error", text):
        total, seen = total + int(m.group(1)), True
    for m in re.finditer(r"RACECHECK SUMMARY: (\d+) hazard", text):
        total, seen = total + int(m.group(1)), True
    return total if seen else None


_UNITS = {"s": 1e3, "ms": 1.0, "us": 1e-3}
_BENCH_ROW = re.compile(r"^\s+(\S+)\s+(.*?)\s+p50\s+([\d.]+) (s|ms|us)\s")


def parse_bench_rows(text: str) -> Dict[str, Dict[str, float]]:
    """``{case: {params: p50 ms}}`` from the harness' progress lines (``  case  B=4 ...  p50  1.234 ms``)."""
    rows: Dict[str, Dict[str, float]] = {}
    for line in text.splitlines():
        m = _BENCH_ROW.match(line)
        if m:
            rows.setdefault(m.group(1), {})[m.group(2).strip()] = float(m.group(3)) * _UNITS[m.group(4)]
    return rows


def parse_vocab_bench(text: str) -> Dict[str, Any]:
    """bench_oal / bench_token_logps: drift's fwd+bwd p50 (ms), the bandwidth floor and the ratio."""
    out: Dict[str, Any] = {}
    m = re.search(r"bandwidth floor[^:]*: ([\d.]+) ms; drift fwd\+bwd = ([\d.]+)x the floor", text)
    if m:
        out["floor_ms"], out["floor_ratio"] = float(m.group(1)), float(m.group(2))
    rows = parse_bench_rows(text)
    if "drift" in rows:
        out["drift_ms"] = list(rows["drift"].values())[-1]
        for case, by_params in rows.items():
            if case != "drift":
                out[f"{case}_ms"] = list(by_params.values())[-1]
    return out


def parse_lcs_bench(text: str, batch: int = 4096, length: int = 512) -> Dict[str, Any]:
    """bench_lcs: the CUDA-vs-all-core-CPU case at ``B=batch L=length`` (p50s and their ratio)."""
    key = f"B={batch} L={length}"
    out: Dict[str, Any] = {}
    rows = parse_bench_rows(text)
    cuda = rows.get("drift-cuda", {}).get(key)
    cpu = [(c, p[key]) for c, p in rows.items() if c.startswith("drift-cpu-") and key in p]
    if cuda is not None:
        out["cuda_ms"] = cuda
    if cpu:
        case, ms = cpu[-1]
        out["cpu_ms"], out["cpu_threads"] = ms, int(case[len("drift-cpu-"):-1])
        if cuda:
            out["cuda_vs_cpu"] = ms / cuda
    m = re.search(r"drift-cuda vs drift-cpu-(\d+)t at B=(\d+) L=(\d+): ([\d.]+)x", text)
    if m and "cuda_vs_cpu" not in out:
        out["cuda_vs_cpu"] = float(m.group(4))
    return out


# =============================================================================================
# the steps
@dataclass
class Context:
    """What the steps share: paths, the environment they run in, facts found by earlier steps."""

    root: Path
    bundle: Path
    out: Path
    work: Path  # scratch (the temporary site dir, sanitizer logs, trainer runs)
    python: str
    env: Dict[str, str] = field(default_factory=dict)
    facts: Dict[str, Any] = field(default_factory=dict)

    @property
    def site(self) -> Path:
        return self.work / "site"

    @property
    def model(self) -> Path:
        return self.bundle / "model"

    @property
    def data(self) -> Path:
        return self.bundle / "data" / "pairs.jsonl"


@dataclass
class Step:
    name: str
    what: str
    timeout: float
    command: Callable[[Context], List[str]]
    parse: Optional[Callable[[str, Context, Dict[str, Any]], None]] = None
    run: Optional[Callable[["Runner", "Step"], Dict[str, Any]]] = None  # custom runner (sanitizers)


def _py(ctx: Context, *args: str) -> List[str]:
    return [ctx.python, *args]


def _show(cmd: Sequence[str]) -> str:
    """The command for the log, with an inline ``-c`` program shortened to its first line."""
    shown = [f"<{len(a.splitlines())}-line program>" if i and cmd[i - 1] == "-c" and "\n" in a else a
             for i, a in enumerate(cmd)]
    return shlex.join(shown)


_ENV_PROBE = r"""
import json, platform, subprocess, shutil
info = {"python": platform.python_version()}
try:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap,memory.total",
                        "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    name, driver, cap, mem = [x.strip() for x in q.splitlines()[0].split(",")]
    info.update(gpu=name, driver=driver, compute_cap=cap, gpu_memory=mem)
except Exception as e:
    info["nvidia_smi_error"] = repr(e)
if not info.get("driver"):
    try:  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  ..."
        import re
        m = re.search(r"Kernel Module\s+([\d.]+)", open("/proc/driver/nvidia/version").read())
        info["driver"] = m.group(1) if m else None
    except OSError:
        pass
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        info.update(arch=f"{major}{minor}", gpu=info.get("gpu") or torch.cuda.get_device_name(0))
except Exception as e:
    info["torch_error"] = repr(e)
if "arch" not in info and info.get("compute_cap"):
    info["arch"] = info["compute_cap"].replace(".", "")
for tool in ("nvcc", "compute-sanitizer", "cmake", "ninja"):
    info[tool] = shutil.which(tool)
try:
    info["nvcc_version"] = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
except Exception:
    pass
import os
info["cpu_count"] = len(os.sched_getaffinity(0))
print("GPU_CHECK_ENV " + json.dumps(info))
"""


def _parse_env(text: str, ctx: Context, rec: Dict[str, Any]) -> None:
    for line in text.splitlines():
        if line.startswith("GPU_CHECK_ENV "):
            ctx.facts.update(json.loads(line[len("GPU_CHECK_ENV "):]))
    if not ctx.facts.get("cuda_available"):
        rec["status"], rec["note"] = "failed", "torch sees no CUDA GPU"


def _wheels_command(ctx: Context) -> List[str]:
    wheels = sorted(glob.glob(str(ctx.bundle / "wheels" / "*.whl")))
    if not wheels:
        return ["sh", "-c", f"echo 'no wheels in {ctx.bundle}/wheels (run scripts/gpu_bundle.sh)' >&2; exit 1"]
    return pip_into_site(ctx.python, ctx.site, wheels, "--no-compile")


def _build_command(ctx: Context) -> List[str]:
    return pip_into_site(ctx.python, ctx.site, [ctx.root], "--no-build-isolation")


def pip_into_site(python: str, site: Path, sources: Sequence[Any], *options: str) -> List[str]:
    """``python -m pip install`` of ``sources`` (wheel files, or a source tree to build) into the folder ``site``,
    offline: no index, no dependencies, no cache, replacing what ``site`` holds; ``options`` come first."""
    return [python, "-m", "pip", "install", *options, "--no-index", "--no-deps", "--no-cache-dir",
            "--disable-pip-version-check", "--upgrade", "--target", str(site), *map(str, sources)]


def with_cuda_arch(cmake_args: str, arch: str) -> str:
    """``cmake_args`` (the ``CMAKE_ARGS`` value) plus the option that builds the CUDA code for ``arch`` ("90") only."""
    return f"{cmake_args} -DCMAKE_CUDA_ARCHITECTURES={arch}".strip()


#: Modules the steps need after the wheels step (the image's and the bundle's), with versions.
_IMPORT_PROBE = r"""
import importlib, json
out = {}
for name in ("torch", "transformers", "accelerate", "datasets", "rouge_score", "nltk", "rapidfuzz", "pytest",
             "hypothesis", "yaml", "safetensors", "scikit_build_core", "pybind11"):
    try:
        out[name] = getattr(importlib.import_module(name), "__version__", "ok")
    except Exception as e:
        out[name] = f"FAILED: {e!r}"
for name in ("trl", "liger_kernel", "cut_cross_entropy"):  # benchmark peers: optional
    try:
        out[name] = getattr(importlib.import_module(name), "__version__", "ok")
    except Exception as e:
        out[name] = f"unavailable: {e!r}"[:200]
print("GPU_CHECK_IMPORTS " + json.dumps(out))
"""

_BUILD_PROBE = r"""
import json, drift
info = drift.build_info()
print("GPU_CHECK_BUILD " + json.dumps({"file": drift.__file__, "cuda_available": drift.cuda_available(), **info}))
"""


def _pytest(ctx: Context, *args: str) -> List[str]:
    return _py(ctx, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args)


def _parse_tests(text: str, ctx: Context, rec: Dict[str, Any]) -> None:
    rec["tests"] = parse_pytest(text)
    if rec["status"] == "passed" and rec["tests"]["passed"] == 0:
        rec["status"], rec["note"] = "failed", "no test passed (all skipped?)"


def _bench_vocab(script: str, key: str) -> Step:
    def parse(text: str, ctx: Context, rec: Dict[str, Any]) -> None:
        rec["metrics"] = m = parse_vocab_bench(text)
        if "floor_ratio" in m:
            ctx.facts[f"{key}_floor_ratio"] = m["floor_ratio"]
        if "drift_ms" in m:
            ctx.facts[f"{key}_fwd_bwd_ms"] = m["drift_ms"]

    return Step(f"bench_{key}", f"benchmarks/{script}: the GPU case (B=4, T=512, V=151936, bf16), drift vs eager",
                90, lambda ctx: _py(ctx, f"benchmarks/{script}", "--device", "cuda", "--repeats", "10", "--warmup", "3",
                                    "--no-csv"), parse)


def _lcs_command(ctx: Context) -> List[str]:
    threads = str(ctx.facts.get("cpu_count") or os.cpu_count() or 1)
    return _py(ctx, "benchmarks/bench_lcs.py", "--quick", "--cuda-batch", "4096", "--cuda-length", "512",
               "--threads", threads, "--no-csv")


def _parse_lcs(text: str, ctx: Context, rec: Dict[str, Any]) -> None:
    rec["metrics"] = m = parse_lcs_bench(text)
    for k in ("cuda_vs_cpu", "cuda_ms", "cpu_ms", "cpu_threads"):
        if k in m:
            ctx.facts[f"lcs_{k}"] = m[k]


def _parse_iteration(text: str, ctx: Context, rec: Dict[str, Any]) -> None:
    m = re.search(r"LCS masking ([\d.]+)%, OAL fwd\+bwd \((\d+) calls\) ([\d.]+)%", text)
    if m:
        rec["metrics"] = {"share_lcs_pct": float(m.group(1)), "oal_calls": int(m.group(2)), "share_oal_pct": float(m.group(3))}


#: The > 2^31-element test (3 x 4 GiB tensors) runs under memcheck only: the 64-bit offsets it checks
#: are memcheck's business, and four copies at once would take 50 GiB and most of the step's time.
BIG_TEST = "beyond_2_31"


def _sanitizer_commands(ctx: Context) -> Dict[str, List[str]]:
    return {tool: ["compute-sanitizer", "--tool", tool,
                   *_pytest(ctx, SANITIZER_TESTS, *([] if tool == "memcheck" else ["-k", f"not {BIG_TEST}"]))]
            for tool in SANITIZER_TOOLS}


def _run_sanitizers(runner: "Runner", step: Step) -> Dict[str, Any]:
    """The four tools at once (each a separate process on the same GPU), logs appended in turn."""
    ctx = runner.ctx
    commands = _sanitizer_commands(ctx)
    if shutil.which("compute-sanitizer", path=ctx.env.get("PATH")) is None:
        return {"status": "failed", "note": "compute-sanitizer is not on the PATH"}
    timeout = runner.step_timeout(step)
    procs = {}
    for tool, cmd in commands.items():
        runner.log(f"$ {shlex.join(cmd)}")
        fh = open(ctx.work / f"sanitizer-{tool}.log", "w+")
        procs[tool] = (subprocess.Popen(cmd, cwd=ctx.root, env=ctx.env, stdout=fh, stderr=subprocess.STDOUT,
                                        start_new_session=True), fh)
    deadline = time.monotonic() + timeout
    counts: Dict[str, Optional[int]] = {}
    tests: Dict[str, Dict[str, int]] = {}
    timed_out, failed = [], []
    for tool, (proc, fh) in procs.items():
        try:
            rc = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc, _ = proc.wait(), timed_out.append(tool)
        fh.seek(0)
        text = fh.read()
        fh.close()
        runner.log(f"----- compute-sanitizer --tool {tool} (exit {rc}) -----\n{text.rstrip()}")
        counts[tool] = parse_sanitizer(text)
        tests[tool] = parse_pytest(text)
        if rc != 0 or counts[tool] is None or counts[tool] or tests[tool]["failed"] or tests[tool]["errors"]:
            failed.append(tool)
    status = "timeout" if timed_out else ("failed" if failed else "passed")
    note = ", ".join(f"{t}: timed out" for t in timed_out) or ", ".join(f"{t}: failed" for t in failed)
    ctx.facts["sanitizer_errors"] = sum(v or 0 for v in counts.values())
    return {"status": status, "sanitizer": counts, "tests": tests, "note": note}


def _needs_bundle_model(ctx: Context) -> List[str]:
    return [] if (ctx.model / "config.json").is_file() else [f"no fixture model at {ctx.model} (run scripts/gpu_bundle.sh)"]


STEPS: List[Step] = [
    Step("env", "GPU, driver, torch, CUDA, tools (nvidia-smi, torch)", 60, lambda ctx: _py(ctx, "-c", _ENV_PROBE), _parse_env),
    Step("wheels", "install the bundle's wheels into a temporary site dir (pip --no-index --no-deps --target)", 120,
         _wheels_command),
    Step("build", "build and install drift for this GPU's architecture only (DRIFT_CUDA=ON, CMAKE_CUDA_ARCHITECTURES)",
         240, _build_command),
    Step("pytest_cuda", f"every cuda-marked test (pytest -m cuda), {SMOKE_TEST} aside (the smoke step)", 200,
         lambda ctx: _pytest(ctx, "-m", "cuda", "--continue-on-collection-errors", "tests", "--ignore", SMOKE_TEST),
         _parse_tests),
    Step("smoke", f"the trainer on the GPU: {SMOKE_TEST} (one DRIFT iteration in bf16 with gradient checkpointing, "
         "kill -9 and resume) on the bundle's fixture model", 180, lambda ctx: _pytest(ctx, "-m", "cuda", SMOKE_TEST),
         _parse_tests),
    Step("sanitizers", f"compute-sanitizer {', '.join(SANITIZER_TOOLS)} over {SANITIZER_TESTS} (in parallel)", 240,
         lambda ctx: [], None, _run_sanitizers),
    _bench_vocab("bench_oal.py", "oal"),
    _bench_vocab("bench_token_logps.py", "token_logps"),
    Step("bench_lcs", "benchmarks/bench_lcs.py --quick plus the CUDA vs all-core CPU case at B=4096 L=512", 120,
         _lcs_command, _parse_lcs),
    Step("bench_iteration", "benchmarks/bench_iteration.py: one SPIN and one DRIFT iteration on the fixture model", 120,
         lambda ctx: _py(ctx, "benchmarks/bench_iteration.py", "--model", str(ctx.model), "--data", str(ctx.data),
                         "--num_train_examples", "8", "--num_eval_examples", "2", "--max_prompt_length", "64",
                         "--max_new_tokens", "16", "--batch_size", "4", "--no-csv"), _parse_iteration),
]

#: The benchmark scripts the steps above cover (tests check that every benchmarks/bench_*.py is here).
BENCHMARKS = {"bench_oal.py": "bench_oal", "bench_token_logps.py": "bench_token_logps", "bench_lcs.py": "bench_lcs",
              "bench_iteration.py": "bench_iteration"}
#: Steps that need what an earlier step made: skipped (not failed) when it was skipped or failed.
NEEDS = {"pytest_cuda": "build", "smoke": "build", "sanitizers": "build", "bench_oal": "build",
         "bench_token_logps": "build", "bench_lcs": "build", "bench_iteration": "build"}


# =============================================================================================
# the runner
def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Runner:
    def __init__(self, ctx: Context, budget: float, skip: Sequence[str], dry_run: bool = False) -> None:
        self.ctx, self.budget, self.skip, self.dry_run = ctx, budget, list(skip), dry_run
        self.t0 = time.monotonic()
        self.started = dt.datetime.now(dt.timezone.utc)
        self.records: List[Dict[str, Any]] = []
        ctx.out.mkdir(parents=True, exist_ok=True)
        self.log_path, self.summary_path = ctx.out / "gpu_check.log", ctx.out / "summary.json"
        self._log = open(self.log_path, "w", buffering=1)

    def log(self, text: str) -> None:
        self._log.write(text + "\n")
        print(text, flush=True)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def step_timeout(self, step: Step) -> float:
        return max(1.0, min(step.timeout, self.left()))

    def run_command(self, cmd: List[str], timeout: float) -> tuple:
        """(exit code or None on timeout, output): the output streams into the log as it comes."""
        proc = subprocess.Popen(cmd, cwd=self.ctx.root, env=self.ctx.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
        lines: List[str] = []

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                self._log.write(line)
                sys.stdout.write(line)
            sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc: Optional[int] = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
            rc = None
        reader.join(timeout=10)
        return rc, "".join(lines)

    def run_step(self, step: Step) -> Dict[str, Any]:
        rec: Dict[str, Any] = {"name": step.name, "what": step.what, "status": "skipped", "seconds": 0.0}
        need = NEEDS.get(step.name)
        prior = {r["name"]: r for r in self.records}
        if step.name in self.skip:
            rec["note"] = "--skip"
            return rec
        if need and need in prior and prior[need]["status"] not in ("passed", "dry-run") and need not in self.skip:
            rec["note"] = f"needs step {need}, which {prior[need]['status']}"
            return rec
        if step.name in ("smoke", "bench_iteration") and _needs_bundle_model(self.ctx) and not self.dry_run:
            rec.update(status="failed", note=_needs_bundle_model(self.ctx)[0])
            return rec
        if self.left() < 5:
            rec["note"] = f"time budget ({self.budget:.0f} s) used up"
            return rec
        self.log(f"\n===== [{time.monotonic() - self.t0:6.1f} s] step {step.name}: {step.what}")
        t = time.monotonic()
        if self.dry_run:
            cmds = _sanitizer_commands(self.ctx).values() if step.run else [step.command(self.ctx)]
            for cmd in cmds:
                self.log("$ " + _show(cmd))
            rec.update(status="dry-run")
            return rec
        if step.run is not None:
            rec.update(step.run(self, step))
        else:
            cmd = step.command(self.ctx)
            timeout = self.step_timeout(step)
            self.log(f"$ {_show(cmd)}   (timeout {timeout:.0f} s)")
            rc, text = self.run_command(cmd, timeout)
            rec["returncode"] = rc
            rec["status"] = "timeout" if rc is None else ("passed" if rc == 0 else "failed")
            if step.parse is not None:
                try:
                    step.parse(text, self.ctx, rec)
                except Exception as e:  # a parser bug must not lose the run
                    rec["parse_error"] = repr(e)
            if step.name == "build" and rec["status"] == "passed":
                self._check_build(rec)
            if step.name == "wheels" and rec["status"] == "passed":
                self._check_imports(rec)
        rec["seconds"] = round(time.monotonic() - t, 1)
        self.log(f"===== step {step.name}: {rec['status'].upper()} in {rec['seconds']} s"
                 + (f" ({rec['note']})" if rec.get("note") else ""))
        return rec

    def _check_imports(self, rec: Dict[str, Any]) -> None:
        rc, text = self.run_command([self.ctx.python, "-c", _IMPORT_PROBE], max(10.0, min(120.0, self.left())))
        info = next((json.loads(l[len("GPU_CHECK_IMPORTS "):]) for l in text.splitlines()
                     if l.startswith("GPU_CHECK_IMPORTS ")), None)
        rec["imports"] = info
        failed = [k for k, v in (info or {}).items() if str(v).startswith("FAILED")]
        if rc != 0 or info is None or failed:
            rec.update(status="failed", note=f"does not import: {', '.join(failed) or 'the probe failed'}")

    def _check_build(self, rec: Dict[str, Any]) -> None:
        rc, text = self.run_command([self.ctx.python, "-c", _BUILD_PROBE], max(10.0, min(60.0, self.left())))
        info = next((json.loads(l[len("GPU_CHECK_BUILD "):]) for l in text.splitlines()
                     if l.startswith("GPU_CHECK_BUILD ")), None)
        rec["build_info"] = info
        arch = self.ctx.facts.get("arch")
        if rc != 0 or info is None:
            rec.update(status="failed", note="the installed drift does not import")
        elif not info.get("cuda_available"):
            rec.update(status="failed", note="drift.cuda_available() is False after the build")
        elif arch and str(info.get("cuda_archs")) != str(arch):
            rec.update(status="failed", note=f"built for {info.get('cuda_archs')}, expected {arch} only")

    def summary(self, finished: bool) -> Dict[str, Any]:
        f = self.ctx.facts
        key = {k: f.get(k) for k in ("oal_fwd_bwd_ms", "oal_floor_ratio", "token_logps_fwd_bwd_ms",
                                     "token_logps_floor_ratio", "lcs_cuda_vs_cpu", "lcs_cuda_ms", "lcs_cpu_ms",
                                     "lcs_cpu_threads", "sanitizer_errors")}
        tests = {k: sum(r.get("tests", {}).get(k, 0) for r in self.records if r["name"] in ("pytest_cuda", "smoke"))
                 for k in ("passed", "failed", "skipped", "errors")}
        goals = []
        for k, op, bound in GOALS:
            v = key.get(k)
            goals.append({"key": k, "goal": f"{op} {bound:g}", "value": v,
                          "met": None if v is None else (v <= bound if op == "<=" else v >= bound)})
        return {
            "schema": SCHEMA,
            "finished": finished,
            "date": self.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_commit": _git_commit(self.ctx.root),
            "gpu": f.get("gpu"), "driver": f.get("driver"), "arch": f.get("arch"), "torch": f.get("torch"),
            "cuda": f.get("cuda"), "python": f.get("python"), "nvcc": f.get("nvcc_version"),
            "cpu_count": f.get("cpu_count"),
            "budget_s": self.budget,
            "total_seconds": round(time.monotonic() - self.t0, 1),
            # ok: every step passed, but those skipped on purpose (--skip); a step skipped for
            # the budget or a failed prerequisite is not ok.
            "ok": finished and any(r["status"] == "passed" for r in self.records)
                  and all(r["status"] == "passed" or (r["status"] == "skipped" and r.get("note") == "--skip")
                          for r in self.records),
            "tests": tests,
            "key": key,
            "goals": goals,
            "steps": self.records,
            "log": str(self.log_path),
        }

    def write_summary(self, finished: bool) -> Dict[str, Any]:
        s = self.summary(finished)
        tmp = self.summary_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(s, indent=2) + "\n")
        tmp.replace(self.summary_path)
        return s

    def run(self) -> Dict[str, Any]:
        self.log(f"drift gpu_check: {self.started:%Y-%m-%d %H:%M:%S} UTC, bundle {self.ctx.bundle}, "
                 f"budget {self.budget:.0f} s, skip {','.join(self.skip) or '-'}")
        self.log(f"log: {self.log_path}\nsummary: {self.summary_path}")
        for step in STEPS:
            try:
                rec = self.run_step(step)
            except Exception as e:  # the runner itself must survive a step
                rec = {"name": step.name, "what": step.what, "status": "failed", "seconds": 0.0,
                       "note": f"runner error: {e!r}"}
            self.records.append(rec)
            self.write_summary(finished=False)
        s = self.write_summary(finished=True)
        self.log("\n" + render_tables(s))
        self.log(f"\nlog: {self.log_path}\nsummary: {self.summary_path}")
        self._log.close()
        return s


def _git_commit(root: Path) -> Optional[str]:
    """drift's ``_provenance.git_commit`` (the commit, ``+dirty``, or $DRIFT_GIT_COMMIT), loaded by its
    path: this runner works before drift is installed."""
    spec = importlib.util.spec_from_file_location("_drift_provenance", ROOT / "python" / "drift" / "_provenance.py")
    provenance = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provenance)
    return provenance.git_commit(root)


def make_context(args: argparse.Namespace, work: Path) -> Context:
    ctx = Context(root=ROOT, bundle=Path(args.bundle).resolve(), out=Path(args.out).resolve(), work=work,
                  python=args.python)
    env = dict(os.environ)
    site = str(ctx.site)
    env.update(
        PYTHONPATH=site + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", PIP_NO_INDEX="1",
        DRIFT_CUDA="ON", DRIFT_CACHE=str(work / "drift-cache"), TMPDIR=str(work / "tmp"), HF_HOME=str(work / "hf"),
        DRIFT_TEST_TINY_MODEL=str(ctx.model),
        CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 4),
    )
    # CUDA's tools where the image keeps them, when they are not on the PATH already.
    for tool in ("nvcc", "compute-sanitizer"):
        if shutil.which(tool, path=env.get("PATH")) is None:
            for d in ("/usr/local/cuda/bin", "/usr/local/cuda/compute-sanitizer", *sorted(glob.glob("/usr/local/cuda-*/bin"))):
                if os.access(os.path.join(d, tool), os.X_OK):
                    env["PATH"] = d + os.pathsep + env.get("PATH", "")
                    break
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    ctx.env = env
    return ctx


def run_check(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="drift-gpu-check-") as tmp:
        ctx = make_context(args, Path(tmp))
        runner = Runner(ctx, args.budget, args.skip, args.dry_run)
        # The build needs the arch, known only after the env step: CMAKE_ARGS is set lazily.
        original = runner.run_step

        def run_step(step: Step) -> Dict[str, Any]:
            if step.name == "build":
                arch = ctx.facts.get("arch")
                if arch:
                    ctx.env["CMAKE_ARGS"] = with_cuda_arch(ctx.env.get("CMAKE_ARGS", ""), arch)
            return original(step)

        runner.run_step = run_step  # type: ignore[method-assign]
        summary = runner.run()
    return 0 if summary["ok"] or args.dry_run else 1


# =============================================================================================
# rendering
def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def render_tables(s: Optional[Dict[str, Any]]) -> str:
    """The markdown of the results block for summary ``s`` (None: no real run yet)."""
    if s is None:
        return ("No real run yet: this block is written by `python3 scripts/gpu_check.py render` from the summary "
                "of the last `scripts/gpu_check.sh` run on a GPU (docs/results/gpu_check.json).")
    lines = [
        f"Last run: {s.get('date')}, commit {s.get('git_commit') or '-'}, {s.get('total_seconds')} s in all "
        f"({'all steps passed' if s.get('ok') else 'NOT all steps passed'}).",
        "",
        "| GPU | driver | arch | torch | CUDA | Python | CPU cores |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {_fmt(s.get('gpu'))} | {_fmt(s.get('driver'))} | {'sm_' + str(s['arch']) if s.get('arch') else '-'} | {_fmt(s.get('torch'))} | "
        f"{_fmt(s.get('cuda'))} | {_fmt(s.get('python'))} | {_fmt(s.get('cpu_count'))} |",
        "",
        "| step | status | seconds | tests passed / failed / skipped | sanitizer errors | numbers |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for r in s.get("steps", []):
        t = r.get("tests")
        if t and all(isinstance(v, dict) for v in t.values()):  # the sanitizers' per-tool counts
            t = {k: sum(v.get(k, 0) for v in t.values()) for k in ("passed", "failed", "skipped")}
        tests = f"{t.get('passed', 0)} / {t.get('failed', 0) + t.get('errors', 0)} / {t.get('skipped', 0)}" if t else ""
        san = r.get("sanitizer")
        san_s = ", ".join(f"{k} {_fmt(v, 'd')}" for k, v in san.items()) if san else ""
        m = r.get("metrics") or {}
        nums = ", ".join(f"{k} {_fmt(v, '.3g') if isinstance(v, float) else _fmt(v)}" for k, v in m.items())
        status = r["status"] + (f" ({r['note']})" if r.get("note") else "")
        lines.append(f"| {r['name']} | {status} | {_fmt(r.get('seconds'), '.1f')} | {tests} | {san_s} | {nums} |")
    lines += ["", "| key number | value | goal | met |", "| --- | ---: | --- | --- |"]
    key = s.get("key", {})
    goals = {g["key"]: g for g in s.get("goals", [])}
    for k, v in key.items():
        g = goals.get(k)
        met = "-" if not g or g["met"] is None else ("yes" if g["met"] else "NO")
        lines.append(f"| {k} | {_fmt(v, '.3g') if isinstance(v, float) else _fmt(v)} | {g['goal'] if g else ''} | {met} |")
    return "\n".join(lines)


def render_doc(doc_text: str, summary: Optional[Dict[str, Any]]) -> str:
    """``doc_text`` with the block between the markers replaced by :func:`render_tables`."""
    return replace_block(doc_text, BEGIN, END, render_tables(summary))


def replace_block(text: str, begin: str, end: str, body: str, where: str = "the doc") -> str:
    """``text`` with what lies between its first ``begin`` and the ``end`` after it replaced by ``body`` (each
    marker then on a line of its own); ValueError naming ``where`` when the markers are missing or out of order."""
    if begin not in text or end not in text or text.index(begin) > text.index(end):
        raise ValueError(f"{where} has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def load_summary(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    if s.get("schema") != SCHEMA:
        raise ValueError(f"{path}: summary schema {s.get('schema')}, expected {SCHEMA}")
    return s


def run_render(args: argparse.Namespace) -> int:
    doc = Path(args.doc)
    old = doc.read_text()
    new = render_doc(old, load_summary(Path(args.summary)))
    if args.check:
        if new != old:
            print(f"{doc}: the results block is stale; run: python3 scripts/gpu_check.py render", file=sys.stderr)
            return 1
        return 0
    if new != old:
        doc.write_text(new)
    print(f"{doc}: results block {'updated' if new != old else 'already up to date'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.command == "steps":
        for s in STEPS:
            print(f"{s.name:<18} {s.timeout:>4.0f} s  {s.what}")
        return 0
    if args.command == "render":
        return run_render(args)
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
