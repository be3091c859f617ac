"""The run directory: where a run writes, and whether a folder's run is this one (to resume or extend).

- :func:`resolve_output_dir`: ``output_dir`` when set, else ``runs/<data name>-<method>`` (then
  ``-2``, ``-3``, ... past folders holding a run with other settings), so runs never collide
  and rerunning a command finds its own folder again.
- :func:`fingerprint` / :func:`check_resume`: a folder records ``config.json`` (every setting)
  and ``fingerprint.json`` (a content hash of each training and held-out example, the resolved
  model path). Resuming with changed settings or changed data is refused with a message that
  says what changed; settings that do not shape stored stages (logging, saving, batch sizes of
  the no-grad passes) and ``iterations`` (raise it to extend a finished run) may change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from drift import assets
from drift import atomic
from drift.trainer.config import DriftConfig
from drift.trainer.layout import CONFIG_FILE, FINGERPRINT_FILE

#: settings that may differ between the run in a folder and the command resuming it: they do not
#: change what the stored stages hold. ``iterations``: stage k depends only on stages < k.
#: ``data``/``eval_data``: compared by content (fingerprint.json), not by how the path is spelled.
FREE_SETTINGS = frozenset({
    "save_steps", "logging_steps", "report_to", "generation_batch_size", "per_device_eval_batch_size",
    "precompute_ref_batch_size", "eval_steps",
    "output_dir", "iterations", "data", "eval_data", "split_file", "save_total_limit", "opponent_generations",
})


def default_output_name(config: DriftConfig) -> str:
    """``<data name>-<method>``: the demo set's name or the data file's stem, filesystem-safe."""
    data = config.data
    name = data if data in assets.DEMO_DATASETS else (Path(data).stem or Path(data).name or "data")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}-{config.method}").strip("._") or "run"


def resolve_output_dir(config: DriftConfig, fp: Dict[str, Any], root: Path = Path("runs"),
                       notes: Optional[List[str]] = None) -> DriftConfig:
    """``config`` with ``output_dir`` set: as given (ValueError from :func:`check_resume` when it holds another
    run), else the first ``root/<name>[-k]`` that is free or holds this very run (same settings and data:
    resume). Each folder passed over adds a line to ``notes``."""
    if config.output_dir:
        check_resume(Path(config.output_dir), config, fp)
        return config
    base = root / default_output_name(config)
    k = 1
    while True:
        cand = dataclasses.replace(config, output_dir=str(base if k == 1 else base.with_name(f"{base.name}-{k}")))
        try:
            check_resume(Path(cand.output_dir), cand, fp)
            return cand
        except ValueError as e:
            if notes is not None:
                notes.append(f"{cand.output_dir} holds another run ({str(e).split(' (', 1)[-1].split(';')[0]})")
        k += 1


def _resolved(value: Any) -> Any:
    if isinstance(value, str) and value and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())
    return value


def settings_diff(old: Dict[str, Any], config: DriftConfig) -> List[str]:
    """The settings (besides :data:`FREE_SETTINGS`) in which ``config`` differs from a stored ``config.json``.

    A field missing from ``old`` (added to drift since) counts as its default; paths are compared
    resolved.
    """
    defaults, new = DriftConfig().to_dict(), config.to_dict()
    out = []
    for k, v in new.items():
        if k in FREE_SETTINGS:
            continue
        was = old.get(k, defaults[k])
        if k == "model_name_or_path":
            was, v = _resolved(was), _resolved(v)
        if was != v:
            out.append(k)
    return sorted(out)


def _row_hashes(rows: Sequence[Any]) -> List[str]:
    def key(r: Any) -> list:
        turns = getattr(r, "messages", None)
        return [r.prompt, r.response] + ([[list(t) for t in turns]] if turns else [])

    return [hashlib.sha256(json.dumps(key(r)).encode()).hexdigest()[:16] for r in rows]


def fingerprint(config: DriftConfig, train_rows: Sequence[Any], eval_rows: Sequence[Any]) -> Dict[str, Any]:
    """What the stored stages were computed from: per-example content hashes and the resolved model."""
    out = {"train_examples": _row_hashes(train_rows), "eval_examples": _row_hashes(eval_rows),
           "data": _resolved(config.data), "eval_data": _resolved(config.eval_data)}
    if config.opponent_generations:
        out["opponent_generations"] = hashlib.sha256(Path(config.opponent_generations).expanduser().read_bytes()).hexdigest()
    return out


def _changed_rows(old: List[str], new: List[str]) -> str:
    if len(old) != len(new):
        return f"{len(old)} examples then, {len(new)} now"
    rows = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    shown = ", ".join(str(i) for i in rows[:8]) + (", ..." if len(rows) > 8 else "")
    return f"{len(rows)} of {len(new)} examples differ (positions {shown} in the split)"


def check_resume(out: Path, config: DriftConfig, fp: Dict[str, Any]) -> None:
    """Raise ValueError naming what changed when ``out`` holds a run with other settings or data."""
    cfg_path = out / CONFIG_FILE
    if not cfg_path.is_file():
        return
    old = atomic.read_json(cfg_path, "delete it to resume with the settings given now (the stored stages are still "
                                      "checked against fingerprint.json), or restore it from a copy")
    diff = settings_diff(old, config)
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {getattr(config, k)!r}" for k in diff)
        raise ValueError(f"output_dir: {out} holds a run with different settings ({shown}); rerun with the old "
                         "values to resume, or use another output_dir (leave it unset for a fresh folder)")
    fp_path = out / FINGERPRINT_FILE
    if not fp_path.is_file():
        return  # a run started before fingerprints: nothing to compare
    old_fp = atomic.read_json(fp_path, "delete it to resume without comparing the data (only if the data is the "
                                       "run's own), or restore it from a copy")
    if old_fp.get("opponent_generations") != fp.get("opponent_generations"):
        raise ValueError(f"opponent_generations: the content of {config.opponent_generations} differs from the file "
                         f"the run in {out} trained on; use another output_dir")
    for split, field in (("train_examples", "data"), ("eval_examples", "eval_data" if config.eval_data else "data")):
        if old_fp.get(split) != fp[split]:
            raise ValueError(
                f"{field}: the {split.replace('_', ' ')} differ from those the run in {out} was computed from "
                f"({_changed_rows(old_fp.get(split) or [], fp[split])}; data then: {old_fp.get('data')}); its stored "
                "generations, masks and reference log-probs belong to the old data - use another output_dir"
            )


def record(out: Path, config: DriftConfig, fp: Dict[str, Any]) -> None:
    """Write ``config.json`` and ``fingerprint.json`` (after :func:`check_resume` passed)."""
    atomic.write_json(out / CONFIG_FILE, config.to_dict())
    atomic.write_json(out / FINGERPRINT_FILE, fp)
