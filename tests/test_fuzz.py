"""The seeded fuzz run of tests/fuzz_drift.py over every public entry point and op.

Cases run in subprocesses (chunks of at most CHUNK cases, ``DRIFT_FUZZ_WORKERS`` at a time,
each under an 8 GiB address-space limit and a timeout), so an abort or a hang fails this test
and names the case that was running, instead of killing pytest. Environment:

- ``DRIFT_FUZZ_CASES`` (default 5000): how many cases; e.g. 100000 for a long run;
- ``DRIFT_FUZZ_SEED`` (default 0): which cases (a case is a function of seed and index);
- ``DRIFT_FUZZ_WORKERS`` (default 2): concurrent subprocesses.

Replay one case: ``python tests/fuzz_drift.py --seed S --start I --stop I+1 -v``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import drift

HERE = Path(__file__).resolve().parent
CHUNK = 2500
SANITIZED = drift.build_info()["sanitized"]
ADDRESS_SPACE = 8 << 30


def _limit_memory() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _run_chunk(seed: int, start: int, stop: int, script: Path = HERE / "fuzz_drift.py") -> dict:
    """Runs cases [start, stop) of ``script`` in one subprocess; returns its summary or what went wrong."""
    from conftest import drift_env

    env = drift_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    per_case = 0.5 if SANITIZED else 0.1
    timeout = 60 + per_case * (stop - start)
    cmd = [sys.executable, str(script), "--seed", str(seed), "--start", str(start), "--stop", str(stop)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              preexec_fn=None if SANITIZED else _limit_memory)
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc = "timeout"
    lines = stdout.splitlines()
    summary = next((json.loads(line[8:]) for line in lines if line.startswith("SUMMARY ")), None)
    last = next((line for line in reversed(lines) if line.startswith("CASE ")), None)
    return {"range": (start, stop), "rc": rc, "summary": summary, "last_case": last,
            "fail_lines": [line for line in lines if line.startswith("FAIL") or line.startswith("    ")][:40],
            "stderr_tail": stderr[-3000:]}


def _problems(results: list, seed: int) -> list:
    problems = []
    for r in results:
        if r["rc"] != 0 or r["summary"] is None or r["summary"]["failures"]:
            crashed = r["summary"] is None
            problems.append(
                f"cases {r['range'][0]}..{r['range'][1]} (seed {seed}): exit status {r['rc']}"
                + (f", crashed or hung while running {r['last_case']}" if crashed else "")
                + "\n" + "\n".join(r["fail_lines"]) + ("\nstderr: " + r["stderr_tail"] if crashed else "")
            )
    return problems


def test_fuzz_runner_turns_an_abort_into_a_failure_naming_the_case(tmp_path):
    """The isolation itself: a worker that aborts (as a C++ terminate would) is reported with
    the case it was running, and this process lives on."""
    script = tmp_path / "aborts.py"
    script.write_text("import os\nfor i in range(3):\n    print(f'CASE {i}', flush=True)\nos.abort()\n")
    result = _run_chunk(0, 0, 10, script)
    assert result["summary"] is None and result["rc"] != 0 and result["last_case"] == "CASE 2"
    (problem,) = _problems([result], 0)
    assert "crashed or hung while running CASE 2" in problem


def test_fuzz_every_entry_point(capsys):
    cases = int(os.environ.get("DRIFT_FUZZ_CASES", "5000"))
    seed = int(os.environ.get("DRIFT_FUZZ_SEED", "0"))
    workers = int(os.environ.get("DRIFT_FUZZ_WORKERS", "2"))
    chunks = [(seed, a, min(a + CHUNK, cases)) for a in range(0, cases, CHUNK)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda c: _run_chunk(*c), chunks))
    seconds = time.monotonic() - t0

    counts: Counter = Counter()
    for r in results:
        if r["summary"] is not None:
            counts.update(r["summary"]["counts"])
    problems = _problems(results, seed)
    for r in results:  # the workers tested this very drift (under run_sanitizers.sh: the sanitized copy)
        if r["summary"] is not None:
            assert (r["summary"]["drift"], r["summary"]["sanitized"]) == (drift.__file__, SANITIZED)
    ran = sum(counts.values())
    with capsys.disabled():
        print(f"\ndrift fuzz: {ran} of {cases} cases (seed {seed}) in {seconds:.1f} s, "
              f"{sum(v for k, v in counts.items() if k.endswith((':ok',)))} valid checked against the reference, "
              f"{sum(v for k, v in counts.items() if k.endswith(':rejected'))} bad inputs rejected by name, "
              f"{len(problems)} failing chunk(s)")
    assert not problems, "\n\n".join(problems)
    assert ran == cases
