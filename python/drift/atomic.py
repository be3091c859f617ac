"""Atomic files: every file drift writes appears whole or not at all; every JSON file it reads is named in its error.

A file is written to a temporary name in the same directory and renamed with ``os.replace``
(atomic on POSIX); a directory is filled under a temporary name and renamed the same way.
A killed run therefore leaves either the previous state or the new one, never half of it.
Used by the trainer, ``drift eval`` / ``python -m drift.general_eval`` and the asset cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator


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


class DamagedFile(ValueError):
    """A file drift reads is unreadable or not what was written; the message is one line naming ``path``."""

    def __init__(self, path: Path, problem: str, remedy: str = "") -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}" + (f"; {remedy}" if remedy else ""))

    @classmethod
    def from_error(cls, path: Path, what: str, e: BaseException, remedy: str = "") -> "DamagedFile":
        """The file at ``path`` failed to load with ``e``: ``<what> (<type>: <first line of e, 200 characters at
        most>)``, e.g. ``what`` = "cannot be read" for a cut or changed file."""
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        return cls(path, f"{what} ({type(e).__name__}: {first})", remedy)


def read_json(path: Path, remedy: str = "delete it or restore it from a copy") -> Any:
    """The JSON value in ``path``; :class:`DamagedFile` (a ValueError) naming the file, what is wrong and
    ``remedy`` when it is not valid JSON; FileNotFoundError when it is missing."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DamagedFile(path, f"not valid JSON (not UTF-8 text at byte {e.start})", remedy) from None
    except json.JSONDecodeError as e:
        raise DamagedFile(path, f"not valid JSON ({e})", remedy) from None


def torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path: Path) -> Any:
    """``torch.load`` of ``path`` on the CPU (drift's own files: pickled lists and dicts)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_digest(path: Path) -> Dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of the file at ``path``."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


@contextlib.contextmanager
def atomic_dir(path: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path``; on success rename it to ``path``.

    An existing ``path`` is replaced (moved aside, then deleted after the rename); with
    ``replace=False`` it is kept and the new folder discarded (the first of concurrent writers wins).
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
        if not replace:
            try:
                os.replace(tmp, path)
            except OSError:
                if not path.exists():
                    raise
            _fsync_dir(path.parent)
            return
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
