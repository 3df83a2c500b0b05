"""Read rows (dicts) from a local file, the bundled sample, or a Hub dataset."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from xgblora_engine.errors import UserError

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet", ".txt")
# owner/name, then optionally :split and/or @config in either order
HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*([:@][\w.\-\[\]%]+){0,2}$")
SAMPLE = "sample"

Rows = list[dict[str, Any]]


def read_rows(spec: str) -> Rows:
    """Rows of 'sample[:name]', a local file, or a Hub dataset 'owner/name[:split][@config]'."""
    spec = spec.strip()
    if spec == SAMPLE or spec.startswith(SAMPLE + ":"):
        from xgblora_engine.data.sample import sample_rows

        return sample_rows(spec.partition(":")[2] or "python-topics")
    path = Path(spec).expanduser()
    if path.exists():
        return read_file(path)
    if looks_like_hub_id(spec):
        return read_hub(spec)
    raise UserError(f"data file not found: {spec}",
                    "check the path; use 'sample' for the bundled dataset, or a Hub dataset id like owner/name")


def looks_like_hub_id(spec: str) -> bool:
    # a missing 'data/train.jsonl' is a typo in a path, not a Hub id
    return bool(HUB_DATASET.match(spec)) and Path(spec.split(":")[0].split("@")[0]).suffix.lower() not in SUPPORTED


# --- local files -----------------------------------------------------------------------

def read_file(path: Path) -> Rows:
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a data file", f"pass one file ending in {', '.join(SUPPORTED)}")
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
               ".parquet": _read_parquet, ".txt": _read_txt}
    if suffix not in readers:
        raise UserError(f"unsupported data file type '{suffix or path.name}': {path}",
                        f"supported types: {', '.join(SUPPORTED)}; convert the file, e.g. to .jsonl")
    if path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty", "add examples to it, or pass another file")
    rows = readers[suffix](path)
    if not rows:
        raise UserError(f"data file {path} has no rows", "add examples to it, one per line (.jsonl) or row (.csv)")
    return rows


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)",
                        "save the file with UTF-8 encoding") from None


def _read_jsonl(path: Path) -> Rows:
    rows = []
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}, line {number}, column {exc.colno}: not valid JSON ({exc.msg})",
                            "each line of a .jsonl file must be one complete JSON object") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {number}: expected a JSON object, got {_json_type(row)}",
                            'each line must look like {"instruction": ..., "output": ...}')
        rows.append(row)
    return rows


def _read_json(path: Path) -> Rows:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several objects one after another: JSON Lines saved as .json
            return _read_jsonl(path)
        raise UserError(f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})",
                        "fix the file, or save it as .jsonl with one object per line") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{path}: expected a list of examples, or an object holding exactly one list "
                            f"(found {len(lists)} lists under keys {', '.join(data) or 'none'})",
                            'write [{"instruction": ..., "output": ...}, ...] or {"data": [...]}')
        data = lists[0]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of examples, got {_json_type(data)}",
                        'write [{"instruction": ..., "output": ...}, ...]')
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path}: example {i} is {_json_type(row)}, not an object",
                            "every example must be a JSON object with named fields")
    return data


def _json_type(value: Any) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false",
             type(None): "null", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _read_csv(path: Path) -> Rows:
    import pandas as pd

    try:  # all text: a column of digits stays what the user wrote
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text", "export the CSV again with UTF-8 encoding") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({str(exc).strip().splitlines()[0]})",
                        "check the delimiter (a comma) and the quoting, or export it again") from None
    return frame.to_dict(orient="records")


def _read_parquet(path: Path) -> Rows:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})",
                        "check that the file is complete; write it again with pandas or pyarrow") from None


def _read_txt(path: Path) -> Rows:
    """One row per paragraph (blank-line separated): plain text for continued pre-training."""
    return [{"text": p.strip()} for p in re.split(r"\n\s*\n", _read_text(path)) if p.strip()]


# --- Hub datasets ----------------------------------------------------------------------

def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """'owner/name[:split][@config]' (either order) -> (name, split, config)."""
    parts = re.split(r"([:@])", spec)
    name, split, config = parts[0], None, None
    for marker, value in zip(parts[1::2], parts[2::2]):
        if marker == ":":
            split = value
        else:
            config = value
    return name, split, config


def read_hub(spec: str) -> Rows:
    """Load through `datasets`, which honours its cache and HF_HUB_OFFLINE."""
    name, split, config = parse_hub_spec(spec)
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split or "train")
    except Exception as exc:  # datasets raises many types for offline, missing or gated data
        raise _hub_error(spec, name, split, exc) from None
    rows = [dict(row) for row in ds]
    if not rows:
        raise UserError(f"dataset '{spec}' has no rows", "choose another split with :split, e.g. owner/name:train")
    return rows


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _hub_error(spec: str, name: str, split: str | None, exc: Exception) -> UserError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    local = "or pass a local .jsonl/.json/.csv/.parquet/.txt file"
    if type(exc).__name__ == "DatasetNotFoundError" or "doesn't exist on the Hub" in text:
        return UserError(f"dataset '{name}' was not found on the Hub (or needs a login)",
                         f"check the id's spelling, log in with `hf auth login` for a gated dataset, {local}")
    if isinstance(exc, (ConnectionError, TimeoutError)) or "Couldn't reach" in text or "offline" in text.lower():
        why = "HF_HUB_OFFLINE is set" if _offline() else "the network is unreachable"
        return UserError(f"dataset '{name}' is not in the local Hugging Face cache and the Hub cannot be "
                         f"reached ({why})",
                         f"download it once while online (`hf download --repo-type dataset {name}`), {local}")
    if "split" in text.lower():
        return UserError(f"dataset '{spec}': {text}", "name the split after a colon, e.g. owner/name:test")
    return UserError(f"could not load dataset '{spec}': {text}",
                     f"check the id, the split (:split) and the config (@config), {local}")
