"""Load (prompt, response) pairs for training and held-out evaluation.

Sources: a demo set name (see :data:`drift.assets.DEMO_DATASETS`), a JSON/JSONL/CSV/parquet
file, or a ``datasets`` ``save_to_disk`` directory. Columns are checked here, before any model
is loaded, and the train/held-out split is a fixed seeded shuffle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from drift import assets

_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Example:
    """One pair: ``prompt`` (x) and ``response`` (the ground truth y), as text."""

    prompt: str
    response: str


@dataclass(frozen=True)
class DataSpec:
    """Resolved data settings: where the rows come from and which columns to read."""

    path: Path
    eval_path: Optional[Path]
    prompt_column: str
    response_column: str
    instruction: Optional[str]


def resolve(data: str, eval_data: Optional[str], prompt_column: Optional[str], response_column: Optional[str],
            instruction: Optional[str]) -> DataSpec:
    """Turn the config's data fields into paths and column names (demo names get their defaults)."""
    if data in assets.DEMO_DATASETS:
        demo = assets.DEMO_DATASETS[data]
        path = assets.demo_data_path(data)
        return DataSpec(path, _path(eval_data, "eval_data"), prompt_column or demo.prompt_column,
                        response_column or demo.response_column,
                        instruction if instruction is not None else demo.instruction)
    return DataSpec(_path(data, "data"), _path(eval_data, "eval_data"), prompt_column or "prompt",
                    response_column or "response", instruction)


def _path(value: Optional[str], name: str) -> Optional[Path]:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.exists():
        demos = ", ".join(sorted(assets.DEMO_DATASETS))
        raise FileNotFoundError(f"{name}: {value!r} is neither a demo set ({demos}) nor an existing path")
    if path.is_file() and path.suffix.lower() not in _FORMATS:
        raise ValueError(f"{name}: unsupported file type {path.suffix!r}; expected one of {sorted(_FORMATS)}")
    return path


def read_rows(path: Path, prompt_column: str, response_column: str, name: str = "data") -> List[Example]:
    """All rows of ``path`` as :class:`Example` (rows with an empty prompt or response are skipped).

    Raises ValueError naming the missing column and listing the ones the file has.
    """
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise ValueError(f"{name}: {path} is a DatasetDict without a 'train' split: {list(ds)}")
            ds = ds["train"]
    else:
        builder = _FORMATS[path.suffix.lower()]
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    for col, field in ((prompt_column, "prompt_column"), (response_column, "response_column")):
        if col not in ds.column_names:
            raise ValueError(f"{field}: column {col!r} is not in {path.name}; it has {ds.column_names}")
    out = []
    for x, y in zip(ds[prompt_column], ds[response_column]):
        if isinstance(x, str) and isinstance(y, str) and x.strip() and y.strip():
            out.append(Example(x.strip(), y.strip()))
    if not out:
        raise ValueError(f"{name}: {path} has no rows with a non-empty {prompt_column!r} and {response_column!r}")
    return out


def split_order(n: int, seed: int) -> List[int]:
    """The row positions ``0..n-1`` in the seeded order the splits are cut from (train first, then held out)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def load_splits(spec: DataSpec, num_train: int, num_eval: int, seed: int) -> Tuple[List[Example], List[Example]]:
    """The fixed training and held-out subsets.

    Rows are shuffled with ``random.Random(seed)``; the first ``num_train`` train and the next
    ``num_eval`` are held out (or ``num_eval`` rows of ``spec.eval_path`` when given). ``-1``
    takes all (the rest). Raises ValueError when there are too few rows.
    """
    rows = read_rows(spec.path, spec.prompt_column, spec.response_column, "data")
    rows = [rows[i] for i in split_order(len(rows), seed)]
    n_train = len(rows) if num_train == -1 else num_train
    if spec.eval_path is None and num_train == -1:
        raise ValueError("num_train_examples: -1 (all) leaves nothing held out; set eval_data or a count")
    if n_train > len(rows):
        raise ValueError(f"num_train_examples: {n_train} requested but data has {len(rows)} usable rows")
    train = rows[:n_train]
    if spec.eval_path is not None:
        pool = read_rows(spec.eval_path, spec.prompt_column, spec.response_column, "eval_data")
    else:
        pool = rows[n_train:]
    n_eval = len(pool) if num_eval == -1 else num_eval
    if n_eval > len(pool) or n_eval == 0:
        raise ValueError(f"num_eval_examples: {n_eval} requested but only {len(pool)} held-out rows are available")
    return train, pool[:n_eval]


def summary(train: List[Example], held_out: List[Example]) -> Dict[str, int]:
    return {"train_examples": len(train), "eval_examples": len(held_out)}
