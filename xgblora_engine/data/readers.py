"""Read rows (dicts) from a local file, the bundled sample, or a Hub dataset.

Rows are read one at a time (``iter_rows``), so a file of any size is never held whole:
JSON Lines, CSV, Parquet and text are streamed, and a Hub dataset is iterated from its
memory-mapped Arrow cache. Only a single JSON array (``.json``) has to be parsed whole.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from xgblora_engine.errors import UserError

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet", ".txt")
# owner/name, then optionally :split and/or @config in either order
HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*([:@][\w.\-\[\]%]+){0,2}$")
SAMPLE = "sample"
CSV_CHUNK = 10_000  # rows parsed at a time from a CSV or Parquet file
DETECT_ROWS = 1000  # the format and columns are read from the first rows

Row = dict[str, Any]
Rows = list[Row]


def read_rows(spec: str, limit: int | None = None) -> Rows:
    """The rows of ``spec`` (at most ``limit`` of them) as a list."""
    return list(islice(iter_rows(spec), limit))


def iter_rows(spec: str) -> Iterator[Row]:
    """Rows of 'sample[:name]', a local file, or a Hub dataset 'owner/name[:split][@config]',
    one at a time. A malformed row raises a UserError naming its line when it is reached."""
    spec = spec.strip()
    if spec == SAMPLE or spec.startswith(SAMPLE + ":"):
        from xgblora_engine.data.sample import sample_rows

        return iter(sample_rows(spec.partition(":")[2] or "python-topics"))
    path = Path(spec).expanduser()
    if path.exists():
        return iter_file(path)
    if looks_like_hub_id(spec):
        return iter_hub(spec)
    raise UserError(f"data file not found: {spec}",
                    "check the path; use 'sample' for the bundled dataset, or a Hub dataset id like owner/name")


def looks_like_hub_id(spec: str) -> bool:
    # a missing 'data/train.jsonl' is a typo in a path, not a Hub id
    return bool(HUB_DATASET.match(spec)) and Path(spec.split(":")[0].split("@")[0]).suffix.lower() not in SUPPORTED


# --- local files -----------------------------------------------------------------------

def iter_file(path: Path) -> Iterator[Row]:
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a data file", f"pass one file ending in {', '.join(SUPPORTED)}")
    suffix = path.suffix.lower()
    readers = {".jsonl": _iter_jsonl, ".json": _iter_json, ".csv": _iter_csv,
               ".parquet": _iter_parquet, ".txt": _iter_txt}
    if suffix not in readers:
        raise UserError(f"unsupported data file type '{suffix or path.name}': {path}",
                        f"supported types: {', '.join(SUPPORTED)}; convert the file, e.g. to .jsonl")
    if path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty", "add examples to it, or pass another file")
    return _not_empty(readers[suffix](path), path)


def _not_empty(rows: Iterator[Row], path: Path) -> Iterator[Row]:
    seen = False
    for row in rows:
        seen = True
        yield row
    if not seen:
        raise UserError(f"data file {path} has no rows", "add examples to it, one per line (.jsonl) or row (.csv)")


def _decode(path: Path, data: bytes, line: int | None = None) -> str:
    try:
        return data.decode("utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except UnicodeDecodeError as exc:
        where = f"{path}, line {line}" if line else str(path)
        raise UserError(f"{where} is not UTF-8 text (byte {exc.start} cannot be decoded)",
                        "save the file with UTF-8 encoding") from None


def _iter_jsonl(path: Path) -> Iterator[Row]:
    # binary lines split on b"\n" only: text mode would also cut at a lone \r, and
    # str.splitlines at U+2028, both of which a JSON line may hold
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = _decode(path, raw, number)
            if not line.strip():
                continue
            yield _json_object(path, number, line)


def _json_object(path: Path, number: int, line: str) -> Row:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}, line {number}, column {exc.colno}: not valid JSON ({exc.msg})",
                        "each line of a .jsonl file must be one complete JSON object") from None
    if not isinstance(row, dict):
        raise UserError(f"{path}, line {number}: expected a JSON object, got {_json_type(row)}",
                        'each line must look like {"instruction": ..., "output": ...}')
    return row


def _iter_json(path: Path) -> Iterator[Row]:
    """A JSON array is parsed whole (JSON has no way to read it in parts): large data
    belongs in .jsonl, which is streamed."""
    try:
        data = json.loads(_decode(path, path.read_bytes()))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several objects one after another: JSON Lines saved as .json
            yield from _iter_jsonl(path)
            return
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
        yield row


def _json_type(value: Any) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false",
             type(None): "null", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _iter_csv(path: Path) -> Iterator[Row]:
    import pandas as pd

    try:  # all text: a column of digits stays what the user wrote
        chunks = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", chunksize=CSV_CHUNK)
        for frame in chunks:
            yield from frame.to_dict(orient="records")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text", "export the CSV again with UTF-8 encoding") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({str(exc).strip().splitlines()[0]})",
                        "check the delimiter (a comma) and the quoting, or export it again") from None


def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=CSV_CHUNK)
        for batch in batches:
            yield from batch.to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})",
                        "check that the file is complete; write it again with pandas or pyarrow") from None


def _iter_txt(path: Path) -> Iterator[Row]:
    """One row per paragraph (blank-line separated): plain text for continued pre-training."""
    paragraph: list[str] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = _decode(path, raw, number).replace("\r\n", "\n").replace("\r", "\n")
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                yield {"text": "".join(paragraph).strip()}
                paragraph = []
    if paragraph:
        yield {"text": "".join(paragraph).strip()}


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


def iter_hub(spec: str) -> Iterator[Row]:
    """Load through `datasets`, which honours its cache and HF_HUB_OFFLINE; the rows are
    read one at a time from its memory-mapped Arrow files."""
    name, split, config = parse_hub_spec(spec)
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split or "train")
    except Exception as exc:  # datasets raises many types for offline, missing or gated data
        raise _hub_error(spec, name, split, exc) from None
    if len(ds) == 0:
        raise UserError(f"dataset '{spec}' has no rows", "choose another split with :split, e.g. owner/name:train")
    return (dict(row) for row in ds)


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
