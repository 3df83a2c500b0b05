"""Atomic writes: a file is either its old self or its complete new self, never half."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable: without this a power cut can undo it, and the
    newest checkpoint or ledger is gone although its files were synced. Windows cannot
    open a folder for syncing (NTFS journals the rename itself)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Every file and folder under ``folder`` on disk, before the folder is published."""
    for path in sorted(Path(folder).rglob("*"), reverse=True):  # contents before their folder
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(Path(folder))


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path``) when it is a file: then no
    folder can be made there."""
    for parent in [Path(path), *Path(path).parents]:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    """Append one line; a crash can at worst leave one partial last line (readers skip it).
    A partial line left by a killed process is closed first, so it never swallows this one."""
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        torn = False
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
        fh.write((b"\n" if torn else b"") + (json.dumps(obj) + "\n").encode("utf-8"))
        fh.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from a killed run or a full disk
    return rows
