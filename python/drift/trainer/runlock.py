"""One writer per run folder: an exclusive lock on ``<output_dir>/.drift.lock`` for a run's life.

The lock is an ``flock`` on an open file, so the operating system drops it when the holding
process ends in any way (kill -9 included): a killed run never leaves a stale lock, and the
file itself may stay. The holder writes its pid (and host) into the file, so a second
``drift train`` on the same folder fails at once with one line naming the folder and that pid.

Under ``accelerate launch`` only the main process (global rank 0) takes it: the other
processes of the same run write nothing the main process does not coordinate. ``drift eval``
and ``drift generate`` only read a run folder and take no lock.

:func:`acquire` takes the lock for the calling process (re-entrant: a process that holds it
may take it again); :func:`releasing` wraps a function so every lock it took is released when
it returns or raises. :func:`last_folder` names the folder of the most recent lock, for error
messages about a failed write that do not name their file (safetensors, torch).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import socket
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

#: The lock file's name inside the run folder (hidden; never removed, only locked).
LOCK_FILE = ".drift.lock"

F = TypeVar("F", bound=Callable[..., Any])


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock; ``folder`` and ``pid`` (None if unknown) say which."""

    def __init__(self, folder: Path, pid: Optional[int], host: Optional[str]) -> None:
        self.folder, self.pid, self.host = folder, pid, host
        holder = "another process" if pid is None else f"process {pid}" + (f" on {host}" if host else "")
        super().__init__(f"output_dir: {folder} is in use by {holder} (another drift train writing the same run "
                         "folder); wait for it to finish or stop it, or use another output_dir")


_held: Dict[Path, List[Any]] = {}  # resolved folder -> [open lock file, hold count]
_last: List[Path] = []


def _holder(f) -> tuple:
    f.seek(0)
    text = f.read().strip().split()
    pid = int(text[0]) if text and text[0].isdigit() else None
    return pid, (text[1] if len(text) > 1 else None)


def acquire(folder: str | Path) -> Path:
    """Take the exclusive lock of run folder ``folder`` (created if missing) for this process.

    Returns the lock file's path. Raises :class:`RunFolderBusy` when another process holds it,
    OSError when the folder cannot be created or the lock file written (read-only, permissions).
    """
    if not isinstance(folder, (str, Path)):
        raise TypeError(f"folder: expected a path, got {type(folder).__name__}")
    folder = Path(folder).expanduser()
    key = folder.resolve()
    _last[:] = [folder]
    if key in _held:
        _held[key][1] += 1
        return folder / LOCK_FILE
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            f.close()
            raise
        pid, host = _holder(f)
        f.close()
        raise RunFolderBusy(folder, pid, host) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()} {socket.gethostname()}\n")
    f.flush()
    _held[key] = [f, 1]
    return folder / LOCK_FILE


def release(folder: str | Path) -> None:
    """Give back one hold of ``folder``'s lock taken by :func:`acquire`; the last one unlocks it."""
    key = Path(folder).expanduser().resolve()
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _held[key]
        entry[0].close()  # closing the file drops the flock


def held() -> List[Path]:
    """The run folders whose lock this process holds."""
    return list(_held)


def last_folder() -> Optional[Path]:
    """The folder of the most recent :func:`acquire` (held or released since), or None."""
    return _last[0] if _last else None


def releasing(func: F) -> F:
    """Decorator: every lock ``func`` acquires (and has not released) is released when it returns or raises."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = {k: v[1] for k, v in _held.items()}
        try:
            return func(*args, **kwargs)
        finally:
            for key in list(_held):
                for _ in range(_held[key][1] - before.get(key, 0)):
                    release(key)

    return wrapper  # type: ignore[return-value]
