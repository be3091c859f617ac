"""A stage folder's ``manifest.json``: the size and SHA-256 of each file the stage wrote, and their summaries.

    {"files": {"generations.pt": {"size": 1234, "sha256": "...", "summary": {"seconds": 0.4, ...}},
               "model/model.safetensors": {"size": ..., "sha256": ...}, ...}}

An entry is removed before its file is (re)written and added after, so a kill in between
leaves no entry, never a stale one. A file without an entry (a run folder written before
manifests, or such a kill) is verified by loading it. ``summary`` holds the few numbers of a
cached stage output that the iteration record reports (its seconds, gamma), so a finished
stage is reported without reading the output itself. Only the main process writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from drift import atomic
from drift.trainer.layout import StageFiles


class Manifest:
    """The manifest of the stage folder ``folder`` (``iter_<k>/`` or ``base/``); names are relative to it."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)
        self.path = StageFiles(self.dir).manifest

    def entries(self) -> Dict[str, Dict[str, Any]]:
        """``{relative name: {"size", "sha256", ["summary"]}}``; empty when there is no (readable) manifest."""
        try:
            files = atomic.read_json(self.path).get("files", {}) if self.path.is_file() else {}
        except (atomic.DamagedFile, AttributeError):
            return {}  # a damaged manifest: every file is verified by loading, and entries are written again
        return files if isinstance(files, dict) else {}

    def _write(self, files: Dict[str, Dict[str, Any]]) -> None:
        atomic.write_json(self.path, {"files": files})

    def forget(self, name: str) -> None:
        """Remove the entry of ``name`` and of every file under it (a folder)."""
        files = self.entries()
        keep = {k: v for k, v in files.items() if k != name and not k.startswith(f"{name}/")}
        if len(keep) != len(files):
            self._write(keep)

    def record(self, name: str, summary: Optional[Dict[str, Any]] = None) -> None:
        """Add the size and SHA-256 of the file ``name`` (and ``summary``); a folder: each file under it."""
        files = self.entries()
        path = self.dir / name
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and not p.is_symlink():
                    files[p.relative_to(self.dir).as_posix()] = atomic.file_digest(p)
        else:
            files[name] = {**atomic.file_digest(path), **({"summary": summary} if summary else {})}
        self._write(files)

    def summary(self, name: str) -> Optional[Dict[str, Any]]:
        """The recorded summary of ``name`` (None when none is recorded)."""
        return self.entries().get(name, {}).get("summary")

    def problem(self, name: str) -> Optional[atomic.DamagedFile]:
        """What is wrong with the file (or any file under the folder) ``name``, as a :class:`drift.atomic.DamagedFile`
        naming the file (not raised); None when each file matches its entry or has none."""
        for rel, entry in self.entries().items():
            if rel != name and not rel.startswith(f"{name}/"):
                continue
            p = self.dir / rel
            if not p.is_file():
                return atomic.DamagedFile(p, "missing (the stage wrote it)")
            got = atomic.file_digest(p)
            if got["size"] != entry.get("size"):
                return atomic.DamagedFile(p, f"{got['size']} bytes, {entry.get('size')} were written")
            if got["sha256"] != entry.get("sha256"):
                return atomic.DamagedFile(p, "not the bytes written (its SHA-256 differs from the recorded one)")
        return None
