"""Load (prompt, response) pairs for training and held-out evaluation.

Sources: a demo set name (see :data:`drift.assets.DEMO_DATASETS`), a JSON/JSONL/CSV/parquet
file, or a ``datasets`` ``save_to_disk`` directory. Columns are checked here, before any model
is loaded, and the train/held-out split is a fixed seeded shuffle.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from drift import assets

_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Row:
    """One row of the data, as text: ``prompt`` (x) and ``response`` (the ground truth y); the trainer encodes
    it as a :class:`drift.trainer.examples.Example`.

    Conversational rows also keep ``messages``: the ``(role, content)`` turns before the final
    assistant turn (``prompt`` is then the last user turn's text); the chat template is applied
    to the whole conversation.
    """

    prompt: str
    response: str
    messages: Optional[Tuple[Tuple[str, str], ...]] = None


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


def _fail(name: str, path: Path, where: str, what: str) -> ValueError:
    """One-line error naming the config field, the file, the line/row and the problem."""
    return ValueError(f"{name}: {path}{', ' + where if where else ''}: {what}")


def _text_lines(path: Path, name: str) -> List[str]:
    """The file's lines as UTF-8 text; a byte that is not UTF-8 is reported with its line and column."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        for i, line in enumerate(raw.split(b"\n"), 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _fail(name, path, f"line {i}", f"not UTF-8 text (byte 0x{line[e.start]:02x} at column "
                            f"{e.start + 1}); re-save the file as UTF-8") from None
        raise


def _json_records(path: Path, name: str) -> List[Dict[str, Any]]:
    """Rows of a JSON file (a list of objects, or one object per line) or a JSONL file, with line numbers in errors."""
    lines = _text_lines(path, name)
    text = "\n".join(lines)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise _fail(name, path, f"line {e.lineno}", f"invalid JSON ({e.msg}, column {e.colno})") from None
        for i, r in enumerate(rows, 1):
            if not isinstance(r, dict):
                raise _fail(name, path, f"row {i}", f"expected a JSON object, got {type(r).__name__}")
        return rows
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(name, path, f"line {i}", f"invalid JSON ({e.msg}, column {e.colno}); expected one JSON "
                        "object per line") from None
        if not isinstance(r, dict):
            raise _fail(name, path, f"line {i}", f"expected a JSON object, got {type(r).__name__}")
        rows.append(r)
    return rows


def _table_records(path: Path, name: str) -> Tuple[List[str], List[Dict[str, Any]]]:
    """Column names and rows of a CSV/parquet file or a ``datasets`` directory."""
    import datasets

    if path.suffix.lower() == ".csv":
        _text_lines(path, name)  # encoding problems named with their line
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    raise ValueError(f"{name}: {path} is a DatasetDict without a 'train' split: {list(ds)}")
                ds = ds["train"]
        else:
            ds = datasets.load_dataset(_FORMATS[path.suffix.lower()], data_files=str(path), split="train")
    except ValueError as e:
        if str(e).startswith(f"{name}: "):
            raise
        raise _fail(name, path, "", f"cannot read it ({_first_line(e)})") from None
    except Exception as e:  # pandas/pyarrow parser errors name the line in their message
        raise _fail(name, path, "", f"cannot read it ({type(e).__name__}: {_first_line(e)})") from None
    return list(ds.column_names), [dict(zip(ds.column_names, vals)) for vals in zip(*(ds[c] for c in ds.column_names))]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_rows(path: Path, prompt_column: str, response_column: str, name: str = "data",
              stats: Optional[Dict[str, int]] = None) -> List[Row]:
    """All usable rows of ``path`` as :class:`Row`.

    A row whose prompt or response is missing, not a string, or empty is dropped; the counts per
    reason go to ``stats`` (``dropped_<reason>``) and a warning is printed. Raises ValueError in
    one line naming ``name``, the file, the line or row and the problem: unreadable file,
    invalid JSON, non-UTF-8 text, a missing column (listing the ones the file has), no rows.
    """
    if path.is_file() and path.suffix.lower() in (".json", ".jsonl"):
        records = _json_records(path, name)
        columns = list(dict.fromkeys(k for r in records for k in r))
    else:
        columns, records = _table_records(path, name)
    return rows_from_records(records, columns, prompt_column, response_column, name, str(path), stats)


MESSAGES_COLUMN = "messages"


def _conversation(value: Any) -> Optional[Tuple[Tuple[Tuple[str, str], ...], str, str]]:
    """``(turns before the answer, last user text, answer)`` of a messages list ending with an assistant turn."""
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        return None
    turns = []
    for m in value:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            return None
        turns.append((m["role"], m["content"]))
    *context, (role, answer) = turns
    users = [c for r, c in context if r == "user"]
    if role != "assistant" or not users:
        return None
    return tuple(context), users[-1], answer


def rows_from_records(records: List[Dict[str, Any]], columns: List[str], prompt_column: str, response_column: str,
                      name: str, source: str, stats: Optional[Dict[str, int]] = None) -> List[Row]:
    """:class:`Row` rows from ``records`` (dicts): prompt/response columns, or a ``messages`` column
    (conversational data, as TRL takes it) when the prompt column is absent.

    A row whose prompt or response is missing, not a string, or empty is dropped; the counts per
    reason go to ``stats`` and a warning names the first such row.
    """
    if not records:
        raise ValueError(f"{name}: {source}: {'the file' if Path(source).exists() else 'the data'} has no rows")
    chat = prompt_column not in columns and MESSAGES_COLUMN in columns
    if not chat:
        for col, field in ((prompt_column, "prompt_column"), (response_column, "response_column")):
            if col not in columns:
                raise ValueError(f"{field}: column {col!r} is not in {Path(source).name}; it has {columns} "
                                 f"(or give a {MESSAGES_COLUMN!r} column of chat turns)")
    out, dropped = [], {"not_a_string": 0, "empty": 0}
    first_bad: Dict[str, int] = {}
    for i, r in enumerate(records, 1):
        turns = None
        if chat:
            conv = _conversation(r.get(MESSAGES_COLUMN))
            x, y, turns = (conv[1], conv[2], conv[0]) if conv else (None, None, None)
        else:
            x, y = r.get(prompt_column), r.get(response_column)
        if not (isinstance(x, str) and isinstance(y, str)):
            reason = "not_a_string"
        elif not (x.strip() and y.strip()):
            reason = "empty"
        else:
            out.append(Row(x.strip(), y.strip(), turns))
            continue
        dropped[reason] += 1
        first_bad.setdefault(reason, i)
    if stats is not None:
        stats.update({f"{name}_rows": len(records), **{f"{name}_dropped_{k}": v for k, v in dropped.items()}})
    cols = f"{MESSAGES_COLUMN!r} (ending with an assistant turn)" if chat else f"{prompt_column!r} or {response_column!r}"
    for reason, n in dropped.items():
        if n:
            what = "a missing or non-string" if reason == "not_a_string" else "an empty"
            print(f"drift: warning: {name}: {source}: dropped {n} of {len(records)} rows with {what} {cols} "
                  f"(first: row {first_bad[reason]})", file=sys.stderr)
    if not out:
        raise ValueError(f"{name}: {source}: no rows with a non-empty string {cols}")
    return out


def in_memory_rows(dataset: Any, prompt_column: str, response_column: str, name: str,
                   stats: Optional[Dict[str, int]] = None) -> List[Row]:
    """Rows of an in-memory ``datasets.Dataset``, a list of dicts, or a dict of columns."""
    if hasattr(dataset, "to_list") and hasattr(dataset, "column_names"):
        records = dataset.to_list()
    elif isinstance(dataset, dict):
        keys = list(dataset)
        records = [dict(zip(keys, vals)) for vals in zip(*(dataset[k] for k in keys))]
    elif isinstance(dataset, (list, tuple)) and all(isinstance(r, dict) for r in dataset):
        records = list(dataset)
    else:
        raise TypeError(f"{name}: expected a datasets.Dataset, a list of dicts or a dict of columns, "
                        f"got {type(dataset).__name__}")
    columns = list(dict.fromkeys(k for r in records for k in r))
    return rows_from_records(records, columns, prompt_column, response_column, name, f"<in-memory {name}>", stats)


def read_prompts(path: Path, prompt_column: str, name: str = "--prompts") -> List[str]:
    """Every non-empty prompt of a prompts-only file: ``.txt`` (one per line) or JSON/JSONL/CSV/parquet
    with a ``prompt_column`` (no response column needed)."""
    if path.suffix.lower() == ".txt":
        prompts = [line.strip() for line in _text_lines(path, name) if line.strip()]
    else:
        if path.suffix.lower() not in _FORMATS:
            raise _fail(name, path, "", f"unsupported file type {path.suffix!r}; expected .txt or one of {sorted(_FORMATS)}")
        if path.suffix.lower() in (".json", ".jsonl"):
            records = _json_records(path, name)
            columns = list(dict.fromkeys(k for r in records for k in r))
        else:
            columns, records = _table_records(path, name)
        if records and prompt_column not in columns:
            raise ValueError(f"prompt_column: column {prompt_column!r} is not in {path.name}; it has {columns}")
        prompts = [r[prompt_column].strip() for r in records
                   if isinstance(r.get(prompt_column), str) and r[prompt_column].strip()]
    if not prompts:
        raise _fail(name, path, "", "no non-empty prompts")
    return prompts


def split_order(n: int, seed: int) -> List[int]:
    """The row positions ``0..n-1`` in the seeded order the splits are cut from (train first, then held out)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


@dataclass(frozen=True)
class SplitIds:
    """Row positions (0-based, in the order :func:`read_rows` returns the rows) of a fixed split."""

    train_ids: Tuple[int, ...]
    eval_ids: Tuple[int, ...]
    rows_in_set: Optional[int] = None  # the data's row count the ids were written for, when recorded


def read_split_file(path: str, name: str = "split_file") -> SplitIds:
    """Read a split file: a JSON object with ``train_ids`` and ``eval_ids`` (lists of distinct row
    positions, ints >= 0) and optionally ``rows_in_set``. Raises ValueError naming ``name`` and the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{name}: {str(path)!r} is not a file")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(name, p, "", f"not a JSON file ({_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise _fail(name, p, "", f"expected a JSON object with train_ids and eval_ids, got {type(obj).__name__}")
    lists = {}
    for key in ("train_ids", "eval_ids"):
        ids = obj.get(key)
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise _fail(name, p, "", f"{key!r} must be a list of row positions (integers >= 0)")
        if len(set(ids)) != len(ids):
            raise _fail(name, p, "", f"{key!r} lists a row more than once")
        lists[key] = tuple(ids)
    if not lists["train_ids"]:
        raise _fail(name, p, "", "'train_ids' is empty")
    rows_in_set = obj.get("rows_in_set")
    if rows_in_set is not None and (not isinstance(rows_in_set, int) or isinstance(rows_in_set, bool) or rows_in_set < 0):
        raise _fail(name, p, "", "'rows_in_set' must be an integer >= 0")
    return SplitIds(lists["train_ids"], lists["eval_ids"], rows_in_set)


def load_splits(spec: DataSpec, num_train: int, num_eval: int, seed: int,
                stats: Optional[Dict[str, int]] = None,
                ids: Optional[SplitIds] = None) -> Tuple[List[Row], List[Row]]:
    """The fixed training and held-out subsets.

    Rows are shuffled with ``random.Random(seed)``; the first ``num_train`` train and the next
    ``num_eval`` are held out (or ``num_eval`` rows of ``spec.eval_path`` when given). ``-1``
    takes all (the rest). With ``ids`` (a split file) the rows are the listed positions instead,
    in the listed order: ``train_ids`` of the data, ``eval_ids`` of the data (or of
    ``spec.eval_path``), the first ``num_train`` / ``num_eval`` of each list (``-1``: all).
    Raises ValueError when there are too few rows.
    """
    rows = read_rows(spec.path, spec.prompt_column, spec.response_column, "data", stats)
    pool = None
    if spec.eval_path is not None:
        pool = read_rows(spec.eval_path, spec.prompt_column, spec.response_column, "eval_data", stats)
    return split_rows(rows, pool, num_train, num_eval, seed, ids)


def _take(ids: Tuple[int, ...], n: int, rows: List[Row], field: str, key: str) -> List[Row]:
    """The first ``n`` (-1: all) of ``ids`` as rows of ``rows``; ValueError naming ``field`` / ``key``."""
    if n != -1 and n > len(ids):
        raise ValueError(f"{field}: {n} requested but the split file lists {len(ids)} {key}")
    chosen = ids if n == -1 else ids[:n]
    bad = [i for i in chosen if i >= len(rows)]
    if bad:
        raise ValueError(f"split_file: {key} {bad[:5]} are outside the {len(rows)} usable rows of the data")
    return [rows[i] for i in chosen]


def split_rows(rows: List[Row], pool: Optional[List[Row]], num_train: int, num_eval: int,
               seed: int, ids: Optional[SplitIds] = None) -> Tuple[List[Row], List[Row]]:
    """:func:`load_splits` on rows already read (``pool``: separate held-out rows, or None)."""
    if ids is not None:
        if ids.rows_in_set is not None and ids.rows_in_set != len(rows):
            raise ValueError(f"split_file: written for a data set of {ids.rows_in_set} rows, but the data has "
                             f"{len(rows)} usable rows (another file or version)")
        shared = sorted(set(ids.train_ids) & set(ids.eval_ids)) if pool is None else []
        if shared:
            raise ValueError(f"split_file: train_ids and eval_ids share rows {shared[:5]}; held-out rows must not be "
                             "trained on")
        if not ids.eval_ids:
            raise ValueError("split_file: 'eval_ids' is empty; the held-out split needs at least one row")
        train = _take(ids.train_ids, num_train, rows, "num_train_examples", "train_ids")
        held_out = _take(ids.eval_ids, num_eval, rows if pool is None else pool, "num_eval_examples", "eval_ids")
        return train, held_out
    rows = [rows[i] for i in split_order(len(rows), seed)]
    n_train = len(rows) if num_train == -1 else num_train
    if pool is None and num_train == -1:
        raise ValueError("num_train_examples: -1 (all) leaves nothing held out; set eval_data or a count")
    if n_train > len(rows):
        raise ValueError(f"num_train_examples: {n_train} requested but data has {len(rows)} usable rows")
    train = rows[:n_train]
    if pool is None:
        pool = rows[n_train:]
    n_eval = len(pool) if num_eval == -1 else num_eval
    if n_eval > len(pool) or n_eval == 0:
        raise ValueError(f"num_eval_examples: {n_eval} requested but only {len(pool)} held-out rows are available")
    return train, pool[:n_eval]

