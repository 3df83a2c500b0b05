"""The run history: the run folders the engine writes (see ``xgblora_engine.rundir``)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xgblora_engine import protocol as P
from xgblora_engine.errors import UserError
from xgblora_engine.rundir import RunDir

# "training"/"preparing" on a run nobody is running means its worker died mid-run.
RESUMABLE = {"stopped", "failed", "training", "preparing"}


@dataclass
class RunSummary:
    path: Path
    status: str
    model: str = ""
    data: str = ""
    step: int = 0
    total_steps: int | None = None
    final_loss: float | None = None
    final_eval_loss: float | None = None
    updated: float = 0.0
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE

    @property
    def exportable(self) -> bool:
        return self.step > 0 and self.status not in ("corrupt", "preparing")


def summarize(path: Path) -> RunSummary:
    run = RunDir(path)
    try:
        s = run.status()
    except UserError as exc:
        return RunSummary(path, "corrupt", message=exc.message)
    return RunSummary(path, str(s.get("status", "?")), model=str(s.get("model", "")), data=str(s.get("data", "")),
                      step=int(s.get("step") or 0), total_steps=s.get("total_steps"),
                      final_loss=s.get("final_loss"), final_eval_loss=s.get("final_eval_loss"),
                      updated=float(s.get("updated") or s.get("created") or 0.0),
                      message=str(s.get("message", "")), info=s)


def list_runs(root: Path) -> list[RunSummary]:
    """Every folder under ``root`` holding a run.json, newest first."""
    if not root.is_dir():
        return []
    runs = [summarize(p.parent) for p in root.glob("*/run.json")]
    return sorted(runs, key=lambda r: (r.updated, r.name), reverse=True)


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
