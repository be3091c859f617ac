"""A small benchmark harness shared by the ``benchmarks/bench_*.py`` scripts (STYLE.md 13).

Usage from a script in this folder (run as ``python benchmarks/bench_x.py``, so this
folder is on ``sys.path``)::

    from _harness import Bench

    bench = Bench("x")                                   # results go to results/x.csv
    for L in (64, 256):
        def setup(L=L):                                  # builds inputs, returns the timed call
            a = make_inputs(L)
            return lambda: my_op(a)
        bench.run("drift-cpu", setup, params={"L": L}, items=1024)
        bench.run("baseline", setup_baseline, params={"L": L}, items=8, note="8-pair subsample")
    bench.print_table(baselines=["baseline"])           # ratio columns: items/s vs the baseline
    bench.write_csv()

Timing: ``setup()`` runs once, untimed, and returns a zero-argument callable ``fn``. ``fn``
is called ``warmup`` times, then ``repeats`` times; each sample is the wall time of
``inner`` calls divided by ``inner`` (``time.perf_counter``; on CUDA the device is
synchronised before starting and before stopping the clock). Reported: p20/p50/p80 of the
samples and the throughput ``items / p50`` (items = the work one call does, e.g. pairs).
Comparisons across rows use throughput, so a slow baseline may be timed on a subsample
(pass its own ``items``) and still be compared fairly per item.

Peak memory (one extra call after the timed ones, never timed):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
  memory allocated before the call: the bytes the call itself allocates at its peak
  (PyTorch's caching allocator only; memory a library allocates with raw ``cudaMalloc`` is
  not seen).
- CPU (method ``"hwm"``): the growth of the process's resident set during the call. Freed
  heap memory is first returned to the OS (glibc ``malloc_trim(0)``), the kernel's RSS
  high-water mark is reset to the current RSS (``echo 5 > /proc/self/clear_refs``), the
  call runs, and the peak is ``VmHWM - VmRSS(before)`` from ``/proc/self/status``. This is
  exact at page granularity, including native and thread-stack memory.
- CPU fallback (method ``"sampled"``, when ``clear_refs`` is not writable): a thread samples
  ``VmRSS`` every 0.5 ms during the call; it can miss peaks shorter than the sampling period
  or while a pure-Python call holds the GIL (the GIL switches every 5 ms).

CSV: :meth:`Bench.write_csv` appends one row per measurement to
``benchmarks/results/<name>.csv`` with a fixed header (:data:`CSV_FIELDS`): UTC date, git
commit (``+dirty`` when the tree has changes), device (CPU model and usable cores, or the
GPU name), torch and Python versions, case, parameters, timings and memory.
"""

from __future__ import annotations

import csv
import ctypes
import datetime as _dt
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Column order of every ``results/<name>.csv``.
CSV_FIELDS = (
    "date_utc",
    "git_commit",
    "device",
    "torch_version",
    "python_version",
    "benchmark",
    "case",
    "params",
    "items",
    "repeats",
    "p20_ms",
    "p50_ms",
    "p80_ms",
    "items_per_s",
    "peak_mem_mb",
    "mem_method",
    "note",
)


@dataclass
class Measurement:
    """One timed case: ``p20/p50/p80`` are seconds per call; ``items`` is the work per call."""

    case: str
    params: Dict[str, Any]
    device: str
    items: int
    repeats: int
    p20: float
    p50: float
    p80: float
    peak_mem_bytes: Optional[int] = None
    mem_method: str = ""
    note: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        """Throughput at the median: ``items / p50`` (inf for a zero-time call)."""
        return self.items / self.p50 if self.p50 > 0 else float("inf")


# --------------------------------------------------------------------------- statistics
def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0..100) of a non-empty sequence."""
    if not samples:
        raise ValueError("samples: expected at least one value")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q: expected 0..100, got {q}")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# --------------------------------------------------------------------------- timing
def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _sync(device: str) -> None:
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], *, device: str = "cpu", warmup: int = 2, repeats: int = 10,
              inner: int = 1) -> List[float]:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``repeats`` samples.

    Each sample times ``inner`` back-to-back calls and divides by ``inner``; on CUDA the
    device is synchronised before starting and before stopping the clock.
    """
    if repeats < 1 or warmup < 0 or inner < 1:
        raise ValueError(f"repeats/warmup/inner: expected >=1/>=0/>=1, got {repeats}/{warmup}/{inner}")
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) / inner)
    return samples


# --------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to return
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu_peak_sampled(fn: Callable[[], Any], period_s: float = 0.0005) -> int:
    base = _status_kb("VmRSS")
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _status_kb("VmRSS"))
            time.sleep(period_s)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        stop.set()
        t.join()
    peak[0] = max(peak[0], _status_kb("VmRSS"))
    return (peak[0] - base) * 1024


def peak_memory(fn: Callable[[], Any], *, device: str = "cpu") -> "tuple[Optional[int], str]":
    """Bytes one call of ``fn`` adds at its peak, and the method used (see module docstring).

    Returns ``(None, "n/a")`` where no method applies (no ``/proc``).
    """
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - before), "cuda-max-allocated"
    if not os.path.exists("/proc/self/status"):
        return None, "n/a"
    _malloc_trim()
    if _reset_hwm():
        before = _status_kb("VmRSS")
        fn()
        return max(0, _status_kb("VmHWM") - before) * 1024, "hwm"
    return _cpu_peak_sampled(fn), "sampled"


# --------------------------------------------------------------------------- environment
def device_name(device: str = "cpu") -> str:
    """``"<CPU model> (<n> cores)"`` for CPU, the GPU name for ``cuda[:i]``."""
    if _is_cuda(device):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores)"


def git_commit() -> str:
    """Short HEAD commit of this checkout, ``+dirty`` when tracked files changed; ``unknown``."""
    from drift._provenance import git_commit as commit

    return commit(REPO_ROOT) or "unknown"


def torch_version() -> str:
    """``torch.__version__``, or ``"none"`` when torch is not importable."""
    try:
        import torch

        return str(torch.__version__)
    except ImportError:
        return "none"


# --------------------------------------------------------------------------- the bench
def _fmt_params(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _fmt_time(s: float) -> str:
    if s >= 1.0:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_rate(r: float) -> str:
    if r >= 1e6:
        return f"{r / 1e6:.2f} M"
    if r >= 1e3:
        return f"{r / 1e3:.1f} k"
    return f"{r:.1f}"


def _fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:.0f}x"
    if r >= 1:
        return f"{r:.2f}x"
    return f"{r:.3g}x"


def _fmt_mem(b: Optional[int]) -> str:
    return "-" if b is None else f"{b / 2**20:.1f} MiB"


class Bench:
    """Collects :class:`Measurement` rows for one benchmark ``name`` (``results/<name>.csv``)."""

    def __init__(self, name: str, *, results_dir: Optional[Path] = None) -> None:
        if not name or any(c in name for c in "/\\ "):
            raise ValueError(f"name: expected a plain file stem, got {name!r}")
        self.name = name
        self.results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
        self.rows: List[Measurement] = []

    def run(self, case: str, setup: Callable[[], Callable[[], Any]], *, params: Optional[Mapping[str, Any]] = None,
            items: int = 1, device: str = "cpu", warmup: int = 2, repeats: int = 10, inner: int = 1,
            memory: bool = True, note: str = "", verbose: bool = True) -> Measurement:
        """Time one case and record it.

        Args:
            case: row name (e.g. ``"drift-cpu-2t"``); baselines are referred to by it.
            setup: zero-argument factory, run once untimed; returns the zero-argument callable
                to time (build inputs in ``setup``, not in the callable).
            params: the case's parameters (e.g. ``{"B": 1024, "L": 256}``); rows with equal
                params are compared with each other in :meth:`print_table`.
            items: work units per call (pairs, tokens): throughput = items / p50.
            device: ``"cpu"`` or ``"cuda[:i]"`` (synchronisation and memory method).
            warmup, repeats, inner: see :func:`time_call`.
            memory: also measure peak memory with :func:`peak_memory` (one extra call).
            note: free text stored in the CSV (e.g. ``"8-pair subsample"``).
        """
        if items < 1:
            raise ValueError(f"items: expected >= 1, got {items}")
        params = dict(params or {})
        fn = setup()
        if not callable(fn):
            raise TypeError(f"setup: expected it to return a callable, got {type(fn).__name__}")
        samples = time_call(fn, device=device, warmup=warmup, repeats=repeats, inner=inner)
        mem, method = peak_memory(fn, device=device) if memory else (None, "off")
        m = Measurement(case=case, params=params, device=device, items=items, repeats=repeats,
                        p20=percentile(samples, 20), p50=percentile(samples, 50), p80=percentile(samples, 80),
                        peak_mem_bytes=mem, mem_method=method, note=note)
        self.rows.append(m)
        if verbose:
            print(f"  {case:<22} {_fmt_params(params):<24} p50 {_fmt_time(m.p50):>11}  "
                  f"{_fmt_rate(m.items_per_s):>8} items/s", flush=True)
        return m

    def add(self, m: Measurement) -> Measurement:
        """Record a measurement made elsewhere (e.g. an extrapolated one: say so in ``note``)."""
        self.rows.append(m)
        return m

    def find(self, case: str, params: Mapping[str, Any]) -> Optional[Measurement]:
        """The last recorded row with this case and params, or None."""
        for m in reversed(self.rows):
            if m.case == case and m.params == dict(params):
                return m
        return None

    def ratio(self, case: str, baseline: str, params: Mapping[str, Any]) -> Optional[float]:
        """Throughput of ``case`` over that of ``baseline`` at ``params`` (None if either is missing)."""
        a, b = self.find(case, params), self.find(baseline, params)
        if a is None or b is None or b.items_per_s == 0:
            return None
        return a.items_per_s / b.items_per_s

    def table(self, baselines: Iterable[str] = (), unit: str = "items") -> str:
        """An aligned text table: one block per distinct params, one line per case.

        Columns: case, items per call, p20/p50/p80 per call, ``<unit>/s`` at p50, peak memory
        and, for each name in ``baselines``, ``x <name>`` = this row's throughput divided by
        that baseline's throughput at the same params (``>1`` = faster than the baseline).
        """
        baselines = list(baselines)
        header = ["params", "case", "items", "p20", "p50", "p80", f"{unit}/s", "peak mem"]
        header += [f"x {b}" for b in baselines]
        lines: List[List[str]] = []
        groups: List[Dict[str, Any]] = []
        for m in self.rows:
            if m.params not in groups:
                groups.append(m.params)
        for g in groups:
            for m in (r for r in self.rows if r.params == g):
                cells = [_fmt_params(g), m.case + ("*" if m.note else ""), str(m.items), _fmt_time(m.p20),
                         _fmt_time(m.p50), _fmt_time(m.p80), _fmt_rate(m.items_per_s), _fmt_mem(m.peak_mem_bytes)]
                for b in baselines:
                    r = self.ratio(m.case, b, g)
                    cells.append("-" if r is None else _fmt_ratio(r))
                lines.append(cells)
        widths = [max(len(header[i]), *(len(r[i]) for r in lines)) if lines else len(header[i])
                  for i in range(len(header))]
        right = set(range(2, len(header)))

        def fmt(cells: List[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        out = [fmt(header), "  ".join("-" * w for w in widths)]
        prev = None
        for cells in lines:
            if prev is not None and cells[0] != prev:
                out.append("")
            prev = cells[0]
            out.append(fmt(cells))
        notes = [(m.case, _fmt_params(m.params), m.note) for m in self.rows if m.note]
        if notes:
            out.append("")
            out.extend(f"* {c} [{p}]: {n}" for c, p, n in notes)
        return "\n".join(out)

    def print_table(self, baselines: Iterable[str] = (), unit: str = "items") -> None:
        """Print :meth:`table`."""
        print(self.table(baselines, unit), flush=True)

    def write_csv(self, path: Optional[Path] = None) -> Path:
        """Append all rows to ``results/<name>.csv`` (header written when the file is new)."""
        path = Path(path) if path is not None else self.results_dir / f"{self.name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_commit": git_commit(),
            "torch_version": torch_version(),
            "python_version": platform.python_version(),
            "benchmark": self.name,
        }
        devices: Dict[str, str] = {}
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            if new:
                w.writeheader()
            for m in self.rows:
                if m.device not in devices:
                    devices[m.device] = device_name(m.device)
                w.writerow({
                    **env,
                    "device": devices[m.device],
                    "case": m.case,
                    "params": _fmt_params(m.params),
                    "items": m.items,
                    "repeats": m.repeats,
                    "p20_ms": f"{m.p20 * 1e3:.6g}",
                    "p50_ms": f"{m.p50 * 1e3:.6g}",
                    "p80_ms": f"{m.p80 * 1e3:.6g}",
                    "items_per_s": f"{m.items_per_s:.6g}",
                    "peak_mem_mb": "" if m.peak_mem_bytes is None else f"{m.peak_mem_bytes / 2**20:.3f}",
                    "mem_method": m.mem_method,
                    "note": m.note,
                })
        return path


def environment_line(devices: Iterable[str] = ("cpu",)) -> str:
    """One line naming commit, torch, Python and the devices, for the top of a script's output."""
    devs = "; ".join(f"{d}: {device_name(d)}" for d in devices)
    return f"commit {git_commit()} | torch {torch_version()} | python {platform.python_version()} | {devs}"


if __name__ == "__main__":  # pragma: no cover - a smoke run: python benchmarks/_harness.py
    b = Bench("harness_smoke", results_dir=Path(os.environ.get("TMPDIR", "/tmp")))
    b.run("sum-list", lambda: (lambda: sum(range(100_000))), params={"n": 100_000}, items=100_000)
    b.run("bytearray-64MiB", lambda: (lambda: bytearray(64 << 20)), params={"n": 100_000}, items=1, repeats=3)
    b.print_table(baselines=["sum-list"])
    print("csv:", b.write_csv(), file=sys.stderr)
