"""Atomic files for the trainer: every stage output appears whole or not at all.

A file is written to a temporary name in the same directory and renamed with ``os.replace``
(atomic on POSIX); a directory is filled under a temporary name and renamed the same way.
A killed run therefore leaves either the previous state or the new one, never half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import torch


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(directory: bool) -> int:
    """The mode an ordinary ``open``/``mkdir`` would give under the process umask (mkstemp/mkdtemp use 0600/0700)."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(directory=False))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if not path.parent.name.endswith(".tmp"):  # not a file of a directory still being filled (atomic_dir)
            fault_point(f"{path.parent.name}/{path.name}: written")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path``; on success rename it to ``path``.

    An existing ``path`` is replaced (moved aside, then deleted after the rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, _mode(directory=True))
    try:
        yield tmp
        for p in tmp.rglob("*"):  # writers that use mkstemp (e.g. safetensors shards) leave 0600
            if not p.is_symlink():
                os.chmod(p, _mode(directory=p.is_dir()))
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        fault_point(f"{path.parent.name}/{path.name}: written")
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(directory: Path) -> None:
    """Delete ``.*.tmp`` leftovers of a killed run in ``directory`` (not recursive)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for p in directory.glob(".*.tmp"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


class MetricsLog:
    """``metrics.jsonl``: one JSON record per line, appended by the main process.

    ``drop`` rewrites the file atomically without the records a resumed stage will write again,
    so a resumed run's log equals an uninterrupted run's (nothing lost or duplicated).
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def records(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill during append: dropped by the next rewrite
        return out

    def append(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = False
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"  # a kill mid-append: start a fresh line
        with open(self.path, "a") as f:
            f.write(("\n" if torn else "") + json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def drop(self, predicate: Callable[[Dict[str, Any]], bool]) -> None:
        """Remove the records for which ``predicate`` is true (and any torn line)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [r for r in self.records() if not predicate(r)]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def has(self, predicate: Callable[[Dict[str, Any]], bool]) -> bool:
        return any(predicate(r) for r in self.records())


def fault_point(name: str) -> None:
    """Test hook: at a named point (``DRIFT_FAULT_INJECT=<name>[|<name>...]``: the first of them reached) send this
    process ``DRIFT_FAULT_SIGNAL`` (default KILL; e.g. TERM, USR1, INT), to check that a kill or a preemption there
    leaves a run that resumes. ``DRIFT_FAULT_TRACE=<file>`` appends each point's name to ``file`` as it is reached."""
    trace = os.environ.get("DRIFT_FAULT_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(name + "\n")
    if name in os.environ.get("DRIFT_FAULT_INJECT", "").split("|"):
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("DRIFT_FAULT_SIGNAL", "KILL")))
