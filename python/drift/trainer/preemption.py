"""Preemption: SIGTERM or SIGUSR1 (a cluster's usual warnings) stop a run cleanly, to be resumed.

While :func:`handled` wraps a run (``drift.train``), the two signals are caught:

- during a training stage's optimizer steps (between ``defer(True)`` and ``defer(False)``) the
  signal is noted, the current optimizer step finishes, its training state is saved (the same
  ``train_state-<step>/`` that ``save_steps`` writes) and :class:`Preempted` is raised, so the
  rerun resumes at the next step exactly as after a kill at that point;
- anywhere else (generation, masks, reference pass, evaluation) :class:`Preempted` is raised at
  once: every finished stage output is already on disk (each is written atomically), and the
  interrupted stage is redone by the rerun;
- a second signal while the first waits for the step to end stops at once.

Under ``accelerate launch`` the processes agree on a noted signal at each step's end (one
all-reduce), so all of them save the state together even when only one was signalled.
:class:`Preempted` is a ``BaseException`` (like ``KeyboardInterrupt``): ``except Exception``
does not swallow it. The ``drift`` command turns it into one line and exit status 128 + the
signal number (143 for SIGTERM, 138 for SIGUSR1).
"""

from __future__ import annotations

import functools
import signal
import threading
from typing import Any, Callable, Dict, Optional, TypeVar

#: The signals that stop a run cleanly.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

F = TypeVar("F", bound=Callable[..., Any])


class Preempted(BaseException):
    """The run was stopped by signal ``signum``; ``saved``: where its training state was saved, if it was."""

    def __init__(self, signum: int, saved: Optional[str] = None) -> None:
        self.signum, self.saved = int(signum), saved
        name = signal.Signals(self.signum).name
        where = (f"the training state was saved after {saved}" if saved
                 else "every finished stage is saved")
        super().__init__(f"stopped by {name}; {where}; rerun the same command to resume")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal."""
        return 128 + self.signum


_state: Dict[str, Any] = {"pending": None, "deferring": False, "installed": False}


def _on_signal(signum: int, frame: Any) -> None:
    if _state["deferring"] and _state["pending"] is None:
        _state["pending"] = signum  # finish the optimizer step first
        return
    raise Preempted(signum)


def handled(func: F) -> F:
    """Decorator: while ``func`` runs (in the main thread), SIGTERM and SIGUSR1 stop it as described above."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread() or _state.get("installed"):
            return func(*args, **kwargs)  # signals reach only the main thread; nested: already installed
        old = {s: signal.signal(s, _on_signal) for s in SIGNALS}
        _state.update(pending=None, deferring=False, installed=True)
        try:
            return func(*args, **kwargs)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            _state.update(pending=None, deferring=False, installed=False)

    return wrapper  # type: ignore[return-value]


def defer(on: bool) -> None:
    """``True``: a signal now waits for :func:`requested` (the end of an optimizer step); ``False``: it stops at
    once again, and one noted meanwhile stops now."""
    if not isinstance(on, bool):
        raise TypeError(f"on: expected a bool, got {type(on).__name__}")
    _state["deferring"] = on
    if not on and _state["pending"] is not None:
        raise Preempted(_state["pending"])


def requested(accelerator: Any = None) -> Optional[int]:
    """The signal noted since :func:`defer` (None: none), agreed by every process of ``accelerator``'s run."""
    pending = _state["pending"] or 0
    if accelerator is not None and getattr(accelerator, "num_processes", 1) > 1:
        import torch
        import torch.distributed as dist

        flag = torch.tensor([pending], dtype=torch.int64, device=accelerator.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        pending = int(flag.item())
    return pending or None


def stop(signum: int, saved: str) -> None:
    """Raise :class:`Preempted` for ``signum`` after the training state was saved (``saved``: where, e.g. 'iter_1
    step 3')."""
    _state.update(pending=None, deferring=False)
    raise Preempted(signum, saved)
