"""``metrics.jsonl``: the run's log, one JSON record per line; :func:`read_metrics` is its one reader.

Every record has a ``kind``: ``data`` (the examples and their cuts), ``step`` (an optimizer
step), ``eval`` (an ``eval_steps`` evaluation inside a stage) or ``iteration`` (a stage's
evaluation and timings). The log stays valid JSON Lines: a line torn by a kill during an append
is cut away before the next append, and a resumed stage first drops the records it writes again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from drift import atomic


def record_key(record: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """What identifies a record in the log: ``(kind, iteration, step)`` (absent fields are None)."""
    return record.get("kind"), record.get("iteration"), record.get("step")


def read_metrics(path: str | Path, kind: Optional[str] = None) -> List[Dict[str, Any]]:
    """The records of the ``metrics.jsonl`` at ``path`` (those of ``kind`` if given), in the order written.

    The one rule every reader of the log follows: a line that is not valid JSON (a line torn by a
    kill during an append) is skipped, and a record whose :func:`record_key` repeats an earlier
    one's (written again by a resumed stage, in logs of drift versions that did not drop it first)
    replaces that earlier copy where it stood: the last copy wins. A missing file reads as no records.
    """
    path = Path(path)
    if not path.is_file():
        return []
    by_key: Dict[Tuple[Any, Any, Any], Dict[str, Any]] = {}
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            by_key[record_key(rec)] = rec  # a repeated key keeps its first position, takes the last value
    return [r for r in by_key.values() if kind is None or r.get("kind") == kind]


class MetricsLog:
    """``metrics.jsonl`` of a run, appended by the main process (``enabled``; other processes keep none).

    The first append cuts a torn last line away (and rewrites a log holding an invalid line
    elsewhere), so the file stays valid JSON Lines; :meth:`drop` rewrites the file atomically
    without the records a resumed stage writes again, so a resumed run's log equals an
    uninterrupted run's (nothing lost or duplicated).
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._repaired = False

    def records(self) -> List[Dict[str, Any]]:
        """Every record, as :func:`read_metrics` reads them."""
        return read_metrics(self.path)

    def repair(self) -> bool:
        """Cut a torn last line away (a kill during an append) and drop any other invalid line; True if the
        file changed. Done by the first :meth:`append`."""
        self._repaired = True
        if not self.enabled or not self.path.is_file():
            return False
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        body_ok = all(_valid(line) for line in lines if line.strip())
        if body_ok and not tail.strip():
            return False
        if body_ok:
            with open(self.path, "r+b") as f:  # only the last line: end it, or cut it off when torn
                if _valid(tail):
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
                else:
                    f.truncate(len(raw) - len(tail))
                os.fsync(f.fileno())
        else:
            self._rewrite(self.records())
        return True

    def append(self, record: Dict[str, Any]) -> None:
        """Append ``record`` as one line (flushed and fsynced)."""
        if not self.enabled:
            return
        if not self._repaired:
            self.repair()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(_line(record))
            f.flush()
            os.fsync(f.fileno())

    def drop(self, predicate: Callable[[Dict[str, Any]], bool]) -> None:
        """Remove the records for which ``predicate`` is true (and any torn line)."""
        if not self.enabled or not self.path.is_file():
            return
        self._rewrite([r for r in self.records() if not predicate(r)])
        self._repaired = True

    def _rewrite(self, records: List[Dict[str, Any]]) -> None:
        """Replace the file atomically by ``records``, one line each (as :meth:`append` writes them)."""
        atomic.write_text(self.path, "".join(_line(r) for r in records))

    def has(self, predicate: Callable[[Dict[str, Any]], bool]) -> bool:
        """Whether any record satisfies ``predicate``."""
        return any(predicate(r) for r in self.records())


def _line(record: Dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


def _valid(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
