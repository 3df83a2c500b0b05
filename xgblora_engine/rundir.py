"""The run directory: everything a run makes, in one folder the app can reopen.

    config.yaml       the resolved settings (every default filled in)
    run.json          status, model and data summary, progress
    events.jsonl      every event of the run, in order (the app redraws plots from it)
    metrics.jsonl     one object per optimizer step, plus eval entries
    ledger.safetensors  the fp32 booster ledger
    checkpoints/      resumable snapshots
    exports/          exported models
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from xgblora_engine.errors import UserError
from xgblora_engine.fileio import append_jsonl, atomic_write_json, read_jsonl


def runs_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("xgblora-studio", appauthor=False)) / "runs"


def new_run_name(model_name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(model_name).name).strip("-")[:40] or "model"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    status_path = property(lambda self: self.path / "run.json")
    events_path = property(lambda self: self.path / "events.jsonl")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    ledger_path = property(lambda self: self.path / "ledger.safetensors")
    checkpoints_path = property(lambda self: self.path / "checkpoints")
    exports_path = property(lambda self: self.path / "exports")

    @classmethod
    def create(cls, path: str | Path | None, model_name: str) -> RunDir:
        run = cls(path if path else runs_root() / new_run_name(model_name))
        if run.status_path.exists():
            raise UserError(f"{run.path} already holds a run",
                            f"resume it with `xgblora resume {run.path}`, or choose another --out")
        if run.path.exists() and any(run.path.iterdir()):
            raise UserError(f"output folder {run.path} exists and is not empty",
                            "choose a new folder with --out; nothing was overwritten")
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.status_path.is_file() or not run.config_path.is_file():
            raise UserError(f"{run.path} is not a run folder (no run.json / config.yaml)",
                            "pass the folder a `xgblora train` run wrote (see --out)")
        return run

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise UserError(f"{self.status_path} is unreadable or corrupt",
                            "the run's checkpoints may still be intact: try `xgblora resume`") from None

    def update_status(self, **fields: Any) -> None:
        current = self.status() if self.status_path.exists() else {}
        current.update(fields, updated=time.time())
        atomic_write_json(self.status_path, current)

    def record_event(self, event_dict: dict[str, Any]) -> None:
        append_jsonl(self.events_path, event_dict)
        kind = event_dict.get("type")
        if kind == "StepMetrics":
            append_jsonl(self.metrics_path, {k: event_dict[k] for k in (
                "step", "round", "loss", "lr", "grad_norm", "layers", "seconds", "tokens")})
        elif kind == "EvalResult":
            append_jsonl(self.metrics_path, {"step": event_dict["step"], "round": event_dict["round"],
                                             "eval_loss": event_dict["eval_loss"]})
        elif kind == "RoundRolledBack":
            append_jsonl(self.metrics_path, {"step": event_dict["step"], "round": event_dict["round"],
                                             "rolled_back": True, "reason": event_dict["reason"]})

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path) if self.metrics_path.exists() else []

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events_path) if self.events_path.exists() else []
