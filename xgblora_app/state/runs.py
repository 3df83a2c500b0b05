"""A run's event log and settings as the app reopens them (the list of runs itself:
``xgblora_engine.runs``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from xgblora_engine import protocol as P
from xgblora_engine.rundir import RunDir


def load_events(path: Path) -> tuple[list[P.Event], int]:
    """A run's events from its events.jsonl, and how many records could not be read."""
    events, bad = [], 0
    for record in RunDir(path).events():
        try:
            events.append(P.from_dict(record))
        except P.ProtocolError:
            bad += 1
    return events, bad


def config_text(path: Path) -> str:
    try:
        return RunDir(path).config_path.read_text(encoding="utf-8")
    except OSError:
        return "(no config.yaml)"


def delete_run(path: Path) -> None:
    shutil.rmtree(path)
