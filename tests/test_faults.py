"""The fault matrix: whatever stops a run, the same command afterwards finishes it as if nothing happened.

Faults: kill -9 at every fault point a run passes (each point of the trainer's ``DRIFT_FAULT_INJECT``
hook, found by tracing an uninterrupted run), SIGTERM / SIGUSR1 (preemption: the training state
saved at the end of the optimizer step) and Ctrl-C, a second writer on the same folder, a full
disk (a 12 MiB tmpfs where this process may mount one, and a stub of the libraries' write errors
everywhere), SIGTERM to one of two processes under ``accelerate launch``. Each is checked for: the same final weights and metrics.jsonl (timings aside) as the
uninterrupted run, or a one-line error naming the folder; nothing finished is lost.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TRAIN_DEPS, drift_env, model_weights, run_records, tiny_config, train_cli, untimed, write_config
from drift.trainer.layout import RunLayout
from test_distributed import ACCELERATE, DDP  # the accelerate launcher and its 2-process DDP options

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")

#: The base model's evaluation, an SFT warm start and one DRIFT iteration (every kind of stage and fault point),
#: 4 optimizer steps each, training state saved every 2 steps.
RUN = dict(sft_warmup_epochs=1, iterations=1, eval_base=True)
STAGES = (0, 1)


def _config(tiny_model_dir, tiny_data, root: Path, **overrides) -> Path:
    """``root/run.yaml`` for a run in ``root/run`` (every run folder is named ``run``, so fault point names agree)."""
    root.mkdir(parents=True, exist_ok=True)
    return write_config(root / "run.yaml", tiny_config(tiny_model_dir, tiny_data, root / "run", **{**RUN, **overrides}))


def _last_line(text: str) -> str:
    """The last non-blank line of ``text`` (a progress bar's carriage returns end lines too)."""
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _start_train(cfg: Path, launcher=None, **env: str) -> subprocess.Popen:
    """``drift train --config cfg`` started in a subprocess (optionally under ``launcher``), its output piped."""
    cmd = (launcher or [sys.executable, "-m"]) + ["drift.cli", "train", "--config", str(cfg)]
    return subprocess.Popen(cmd, env=drift_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_a_step(proc: subprocess.Popen, run: Path) -> None:
    """Until ``run``'s metrics.jsonl holds a step record, ``proc`` ends, or 300 s pass."""
    metrics, deadline = RunLayout(run).metrics, time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and '"kind": "step"' in metrics.read_text():
            break
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tiny_data, tmp_path_factory):
    """One uninterrupted run and the fault points it passed, in order (first passes only)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    trace = root / "trace.txt"
    done = train_cli(_config(tiny_model_dir, tiny_data, root), {"DRIFT_FAULT_TRACE": str(trace)})
    assert done.returncode == 0, done.stderr[-3000:]
    points = list(dict.fromkeys(trace.read_text().splitlines()))
    return root / "run", points


def assert_same_run(reference: Path, run: Path) -> None:
    """Same weights of every stage model, same metrics.jsonl but for timings, no training state or temporaries left."""
    for k in STAGES:
        a, b = model_weights(RunLayout(reference).model(k)), model_weights(RunLayout(run).model(k))
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a), f"iter_{k}: weights differ"
    assert untimed(run_records(reference)) == untimed(run_records(run))
    assert not list(run.rglob("train_state*")), "training state left behind"
    assert not list(run.rglob(".*.tmp")), "temporaries left behind"


def finished_files(run: Path) -> dict:
    """SHA-256 of every finished output in ``run`` (not the log, the training state, temporaries or the lock), and
    each stage manifest's entries (a manifest gains entries as its stage goes on; a recorded one never changes)."""
    out = {}
    for p in run.rglob("*"):
        rel = p.relative_to(run)
        if (p.is_file() and p.name != "metrics.jsonl" and not any(part.startswith((".", "train_state"))
                                                                    for part in rel.parts)):
            if p.name == "manifest.json":
                for name, entry in json.loads(p.read_text())["files"].items():
                    out[f"{rel.parent}/{name} (manifest entry)"] = json.dumps(entry, sort_keys=True)
            else:
                out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_nothing_lost(before: dict, run: Path) -> None:
    now = finished_files(run)
    lost = sorted(k for k in before if now.get(k) != before[k])
    assert not lost, f"finished outputs lost or changed: {lost}"


# --- kill -9 ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_at_every_fault_point_resumes_to_the_uninterrupted_run(tiny_model_dir, tiny_data, tmp_path, uninterrupted):
    """A chain of runs on one folder, each killed (SIGKILL) at the first point it reaches among those of the
    uninterrupted run's trace not yet killed at, then one that finishes: nothing finished is lost, and the result
    is the uninterrupted run's. Every point is killed at but the training steps a resume skips (it goes on from
    the last saved training state)."""
    reference, points = uninterrupted
    assert any("train:step" in p for p in points) and any("generate:batch" in p for p in points)
    assert any(p.endswith("model: written") for p in points) and any("eval:batch" in p for p in points)
    cfg = _config(tiny_model_dir, tiny_data, tmp_path)
    run, trace, killed = tmp_path / "run", tmp_path / "trace.txt", []
    remaining = list(points)
    while remaining:
        before = finished_files(run) if run.is_dir() else {}
        trace.unlink(missing_ok=True)
        result = train_cli(cfg, {"DRIFT_FAULT_INJECT": "|".join(remaining), "DRIFT_FAULT_TRACE": str(trace)})
        assert result.returncode == -9, f"none of {remaining} reached (exit {result.returncode})\n{result.stderr[-2000:]}"
        assert_nothing_lost(before, run)
        killed.append(trace.read_text().splitlines()[-1])
        remaining = remaining[remaining.index(killed[-1]) + 1:]
    skipped = [p for p in points if p not in killed]
    assert all("train:step" in p for p in skipped), skipped
    before = finished_files(run)
    resumed = train_cli(cfg)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_nothing_lost(before, run)
    assert_same_run(reference, run)


# --- preemption and Ctrl-C -------------------------------------------------------------------

#: (fault point, signal, exit status, what the last line says): SIGTERM / SIGUSR1 inside training stop after the
#: step with its state saved (steps 3 and 1 are not save_steps multiples: only the preemption saves them);
#: outside training they stop at once; Ctrl-C keeps what was saved before.
SIGNAL_CHAIN = [
    ("iter_0: train:step3", "TERM", 143, "stopped by SIGTERM; the training state was saved after iter_0 step 3 of 4"),
    ("iter_1: generate:batch1", "USR1", 138, "stopped by SIGUSR1; every finished stage is saved"),
    ("iter_1: train:step1", "USR1", 138, "stopped by SIGUSR1; the training state was saved after iter_1 step 1 of 4"),
    ("iter_1: train:step3", "INT", 130, "interrupted (Ctrl-C); rerun the same command to resume"),
]


@pytest.mark.slow
def test_sigterm_sigusr1_and_ctrl_c_stop_in_one_line_and_resume_to_the_uninterrupted_run(
        tiny_model_dir, tiny_data, tmp_path, uninterrupted):
    reference, _ = uninterrupted
    cfg = _config(tiny_model_dir, tiny_data, tmp_path)
    run = tmp_path / "run"
    for point, sig, status, says in SIGNAL_CHAIN:
        before = finished_files(run) if run.is_dir() else {}
        stopped = train_cli(cfg, {"DRIFT_FAULT_INJECT": point, "DRIFT_FAULT_SIGNAL": sig})
        assert stopped.returncode == status, f"{point} {sig}: exit {stopped.returncode}\n{stopped.stderr[-2000:]}"
        last = _last_line(stopped.stderr)
        assert says in last and "rerun the same command" in last, last
        assert "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
        assert_nothing_lost(before, run)
        if "saved after" in says:  # the state of exactly that step, not the last save_steps one
            files = RunLayout(run).files(int(point[5]))
            step = int(point.rsplit("step", 1)[1])
            assert files.train_state(step).is_dir() and files.train_state_pointer.is_file()
    resumed = train_cli(cfg)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, run)


@pytest.mark.slow
def test_sigterm_from_outside_stops_and_resumes_to_the_uninterrupted_run(tiny_model_dir, tiny_data, tmp_path,
                                                                          uninterrupted):
    """A real SIGTERM from another process, once the SFT warm start trains (wherever the run is by then)."""
    reference, _ = uninterrupted
    cfg = _config(tiny_model_dir, tiny_data, tmp_path)
    proc = _start_train(cfg)
    _wait_for_a_step(proc, tmp_path / "run")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 143, err[-3000:]
    last = _last_line(err)
    assert last.startswith("drift train: stopped by SIGTERM;") and last.endswith("rerun the same command to resume")
    resumed = train_cli(cfg)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, tmp_path / "run")


# --- two writers -----------------------------------------------------------------------------

@pytest.mark.slow
def test_second_writer_on_one_folder_fails_in_one_line_naming_folder_and_pid(tiny_model_dir, tiny_data, tmp_path,
                                                                             uninterrupted):
    """The first run stops itself (SIGSTOP) in iteration 1's training, holding the folder: a second run on it fails
    at once naming the first's pid; the first, continued, finishes alone (no duplicated records)."""
    reference, _ = uninterrupted
    cfg = _config(tiny_model_dir, tiny_data, tmp_path)
    first = _start_train(cfg, DRIFT_FAULT_INJECT="iter_1: train:step2", DRIFT_FAULT_SIGNAL="STOP")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            if Path(f"/proc/{first.pid}/stat").read_text().split(") ", 1)[1].startswith("T"):
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before its stop point"
        second = train_cli(cfg)
        assert second.returncode == 1, second.stderr[-3000:]
        line = _last_line(second.stderr)
        assert line == (f"drift train: error: output_dir: {tmp_path / 'run'} is in use by process {first.pid} on "
                        f"{os.uname().nodename} (another drift train writing the same run folder); wait for it to "
                        "finish or stop it, or use another output_dir"), line
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert_same_run(reference, tmp_path / "run")


def test_run_lock_is_exclusive_reentrant_and_dropped_when_its_holder_dies(tmp_path):
    from drift.trainer import runlock

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from drift.trainer import runlock; "
                               f"runlock.acquire({str(tmp_path)!r}); print('held', flush=True); time.sleep(600)"],
                              env=drift_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.RunFolderBusy, match=f"in use by process {holder.pid} "):
            runlock.acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / runlock.LOCK_FILE).is_file()  # the file stays; the lock died with its holder

    @runlock.releasing
    def twice():
        runlock.acquire(tmp_path)
        runlock.acquire(tmp_path)  # re-entrant in one process
        assert runlock.held() == [tmp_path.resolve()]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        twice()
    assert runlock.held() == []  # released although the function raised
    assert runlock.last_folder() == tmp_path


# --- a full disk -----------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 12 MiB tmpfs at ``tmp_path/disk`` (skips where this process may not mount one); unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); test_full_disk_stub covers the same errors")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


@pytest.mark.slow
def test_full_disk_fails_in_one_line_then_the_same_command_resumes(tiny_model_dir, tiny_data, tmp_path, small_tmpfs,
                                                                   uninterrupted):
    """12 MiB fill up during iteration 0; the line names the folder; a read-only disk likewise; with room the same
    command finishes the run as if it had never stopped."""
    reference, _ = uninterrupted
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model_dir, tiny_data, small_tmpfs / "run", **RUN))
    full = train_cli(cfg)
    assert full.returncode == 1, full.stderr[-3000:]
    line = _last_line(full.stderr)
    assert line.startswith("drift train: error: no space left on device") and f"{small_tmpfs / 'run'}" in line, line
    assert line.endswith("rerun the same command to resume (finished stages are kept)") and "Traceback" not in full.stderr
    before = finished_files(small_tmpfs / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True, timeout=30)
    read_only = train_cli(cfg)
    assert read_only.returncode == 1, read_only.stderr[-3000:]
    assert _last_line(read_only.stderr).startswith(f"drift train: error: read-only file system: {small_tmpfs / 'run'}")
    subprocess.run(["mount", "-o", "remount,rw,size=256m", str(small_tmpfs)], check=True, timeout=30)
    resumed = train_cli(cfg)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_nothing_lost(before, small_tmpfs / "run")
    assert_same_run(reference, small_tmpfs / "run")


def _no_space(kind: str):
    """The error a library raises on a full disk: Python's OSError, safetensors' (errno in its text), torch's
    (no errno at all)."""
    if kind == "python":
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if kind == "safetensors":
        from safetensors import SafetensorError

        return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    err = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    err.__context__ = RuntimeError("basic_ios::clear: iostream error")
    return err


@pytest.mark.parametrize("kind", ["python", "safetensors", "torch"])
def test_full_disk_stub_fails_in_one_line_naming_the_run_folder(kind, tiny_model_dir, tiny_data, tmp_path, capsys,
                                                                monkeypatch):
    """A file system stub: saving the first stage model raises what each library raises on a full disk (torch's
    error carries no errno: the line says what failed and how much room is left)."""
    import shutil
    from collections import namedtuple

    from drift.cli import main
    from drift.trainer import checkpoints

    def full(*a, **k):
        raise _no_space(kind)

    monkeypatch.setattr(checkpoints, "save_stage_model", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**30, 2**30 - 2**19, 2**19))
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model_dir, tiny_data, tmp_path / "run"))
    assert main(["train", "--config", str(cfg)]) == 1
    last = _last_line(capsys.readouterr().err)
    assert last.startswith("drift train: error: no space left on device"), last
    assert f": {tmp_path / 'run'};" in last and last.endswith("rerun the same command to resume (finished "
                                                               "stages are kept)"), last
    if kind == "torch":
        assert "(writing a file failed (torch.save), 0.5 MiB free there)" in last


@pytest.mark.slow
@pytest.mark.skipif(not ACCELERATE.exists(), reason="needs the accelerate launcher")
def test_sigterm_to_one_process_of_two_saves_the_state_on_both_and_resumes(tiny_model_dir, tiny_data, tmp_path):
    """Under ``accelerate launch`` (2 CPU processes), SIGTERM to one worker only: both agree at the step's end, save
    the training state together (save_steps 100: only the preemption saves) and stop; the rerun finishes with every
    step logged once."""
    cfg = _config(tiny_model_dir, tiny_data, tmp_path, save_steps=100, gradient_accumulation_steps=1, max_steps=30,
                  eval_base=False)  # long training: the signal lands in it
    launcher, env = [str(ACCELERATE), *DDP, "-m"], {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = _start_train(cfg, launcher, **env)
    _wait_for_a_step(proc, tmp_path / "run")
    workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if "stopped by SIGTERM" not in err and proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert err.count("stopped by SIGTERM") == 2, err[-3000:]  # both processes stopped
    saved = [p for k in STAGES for p in RunLayout(tmp_path / "run").files(k).train_states()]
    assert len(saved) == 1 and "the training state was saved after iter_0 step" in err, (saved, err[-2000:])
    resumed = train_cli(cfg, env, launcher=launcher)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [(r["iteration"], r["step"]) for r in run_records(tmp_path / "run", "step")]
    assert steps == [(k, s) for k in STAGES for s in range(1, 31)], steps
