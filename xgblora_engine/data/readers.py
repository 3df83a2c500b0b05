"""Read rows (dicts) from a local file, the bundled sample, or a Hub dataset."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from xgblora_engine.errors import UserError

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet", ".txt")
HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+([:@][\w.\-\[\]%:]+)*$")


def read_rows(spec: str) -> list[dict[str, Any]]:
    spec = spec.strip()
    if spec in ("sample", "sample:python-topics", "sample:unicode-names"):
        from xgblora_engine.data.sample import sample_rows

        return sample_rows(spec.partition(":")[2] or "python-topics")
    path = Path(spec).expanduser()
    if path.exists():
        return read_file(path)
    if HUB_DATASET.match(spec) and not spec.startswith((".", "/", "~")) and path.suffix.lower() not in SUPPORTED:
        return read_hub(spec)
    raise UserError(f"data file not found: {spec}",
                    "check the path, use 'sample' for the bundled dataset, or a Hub dataset id like owner/name")


def read_file(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a data file", f"pass one file ending in {', '.join(SUPPORTED)}")
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
               ".parquet": _read_parquet, ".txt": _read_txt}
    if suffix not in readers:
        raise UserError(f"unsupported data file type '{suffix or path.name}'",
                        f"use one of {', '.join(SUPPORTED)}")
    rows = readers[suffix](path)
    if not rows:
        raise UserError(f"data file {path} has no rows", "add examples to it, one per line (.jsonl) or row (.csv)")
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})",
                                "each line of a .jsonl file must be one JSON object") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}",
                                'each line must look like {"instruction": ..., "output": ...}')
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
                        "fix the file, or save it as .jsonl with one object per line") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{path}: expected a list of examples, or an object holding one list",
                            'write [{"instruction": ..., "output": ...}, ...]')
        data = lists[0]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of examples", 'write [{"instruction": ..., "output": ...}, ...]')
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path}: example {i} is a {type(row).__name__}, not an object",
                            "every example must be a JSON object with named fields")
    return data


def _read_csv(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})",
                        "check the delimiter and quoting, or export it again as UTF-8 CSV") from None
    return frame.to_dict(orient="records")


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: not a readable Parquet file ({exc})", "check the file is complete") from None


def _read_txt(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [{"text": p.strip()} for p in re.split(r"\n\s*\n", text) if p.strip()]


def read_hub(spec: str) -> list[dict[str, Any]]:
    """owner/name[:split][@config] through `datasets`, honouring its cache and HF_HUB_OFFLINE."""
    name, _, config = spec.partition("@")
    name, _, split = name.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as exc:  # offline, missing, gated: datasets raises many types
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "doesn't exist" in text or "not found" in text.lower() and not offline:
            message = f"dataset '{name}' was not found on the Hub"
        else:
            message = (f"dataset '{name}' is not in the local cache and the Hub cannot be reached"
                       + (" (HF_HUB_OFFLINE is set)" if offline else ""))
        raise UserError(message, "download it once while online, or pass a local .jsonl/.csv/.parquet file") from None
    return [dict(row) for row in ds]
