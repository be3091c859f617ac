"""Provenance of a recorded result: the git commit of the code that produced it.

Standard library only and no drift imports: ``scripts/gpu_check.py`` (which must run before
drift is installed) loads this file by its path; the benchmark harness and the study scripts
import it as ``drift._provenance``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]


def git_commit(root: PathLike, paths: Sequence[PathLike] = ()) -> Optional[str]:
    """HEAD of the checkout at ``root`` (12 hex digits), ``+dirty`` when tracked files (under ``paths``,
    default all) differ from it; None outside a checkout or without git.

    ``$DRIFT_GIT_COMMIT`` wins where set: a tree copied without its git metadata, or with a stale
    ``.git`` whose HEAD is not the tree's.
    """
    if os.environ.get("DRIFT_GIT_COMMIT"):
        return os.environ["DRIFT_GIT_COMMIT"]
    git = ["git", "-C", str(Path(root))]
    try:
        head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", *map(str, paths)],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")
