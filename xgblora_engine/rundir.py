"""The run directory: everything a run makes, in one folder the app can reopen.

    config.yaml       the resolved settings (every default filled in)
    run.json          status, model and data summary, progress
    events.jsonl      every event of the run, in order (the app redraws plots from it)
    metrics.jsonl     one object per optimizer step, plus eval, memory and sample-score entries
    samples.jsonl     answers to a few held-out prompts at every evaluation
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
from xgblora_engine.fileio import append_jsonl, atomic_write_json, file_in_the_way, read_jsonl


def runs_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("xgblora-studio", appauthor=False)) / "runs"


def named_run(spec: str | Path, root: Path | None = None) -> Path:
    """A run folder given as a path, or by its name in the runs folder (as `xgblora runs`
    lists it); a path that exists wins."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    named = Path(root or runs_root()) / str(spec)
    return named if named.is_dir() else path


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
    samples_path = property(lambda self: self.path / "samples.jsonl")
    ledger_path = property(lambda self: self.path / "ledger.safetensors")
    checkpoints_path = property(lambda self: self.path / "checkpoints")
    exports_path = property(lambda self: self.path / "exports")

    @classmethod
    def create(cls, path: str | Path | None, model_name: str) -> RunDir:
        run = cls(path if path else runs_root() / new_run_name(model_name))
        _check_creatable(run.path)
        if run.config_path.exists():
            raise UserError(f"{run.path} already holds a run",
                            f"resume it with `xgblora resume {run.path}`, or choose another --out")
        if run.is_unstarted_leftover():
            run.clear_leftover()  # killed before its settings were written: nothing to keep
        if run.path.exists() and any(run.path.iterdir()):
            raise UserError(f"output folder {run.path} exists and is not empty",
                            "choose a new folder with --out; nothing was overwritten")
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the run folder {run.path}: {exc.strerror or exc}",
                            "choose a folder you can write to with --out") from None
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if run.config_path.is_file():
            return run
        if run.is_unstarted_leftover():
            raise UserError(f"{run.path} holds a run that was stopped before its settings were written, "
                            "so nothing was trained",
                            f"start it again with `xgblora train ... --out {run.path}` (the folder is reused)")
        raise UserError(f"{run.path} is not a run folder (no config.yaml)",
                        "pass the folder a `xgblora train` run wrote (see --out), or a name `xgblora runs` lists")

    LEFTOVER_FILES = frozenset({"run.json", "events.jsonl", "metrics.jsonl"})

    def is_unstarted_leftover(self) -> bool:
        """A folder a run made before it wrote its settings: a status and a log at most."""
        if not self.path.is_dir() or self.config_path.exists():
            return False
        names = {p.name for p in self.path.iterdir() if not p.name.startswith(".")}
        return bool(names) and names <= self.LEFTOVER_FILES and self.status_path.exists()

    def clear_leftover(self) -> None:
        for name in self.LEFTOVER_FILES:
            (self.path / name).unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise UserError(f"{self.status_path} is unreadable or corrupt",
                            "the run's checkpoints may still be intact: try `xgblora resume`") from None

    def update_status(self, **fields: Any) -> None:
        try:
            current = self.status() if self.status_path.exists() else {}
        except UserError:  # a torn run.json must not block the run that rewrites it
            current = {}
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
        elif kind == "SampleAnswers":
            append_jsonl(self.samples_path, {k: event_dict[k] for k in (
                "step", "round", "token_f1", "exact_match", "seconds", "answers")})
            append_jsonl(self.metrics_path, {k: event_dict[k] for k in ("step", "round", "token_f1", "exact_match")})
        elif kind == "MemorySample":  # the device's peak where there is one, else the process's
            peak = event_dict["peak"]
            append_jsonl(self.metrics_path, {"step": event_dict["step"],
                                             "memory": peak if peak is not None else event_dict["rss"]})
        elif kind == "RoundRolledBack":
            append_jsonl(self.metrics_path, {"step": event_dict["step"], "round": event_dict["round"],
                                             "rolled_back": True, "reason": event_dict["reason"]})

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path) if self.metrics_path.exists() else []

    def samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.samples_path) if self.samples_path.exists() else []

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events_path) if self.events_path.exists() else []


def _check_creatable(path: Path) -> None:
    """A folder below a file is refused before anything runs."""
    blocker = file_in_the_way(path)
    if blocker is not None and blocker != path:
        raise UserError(f"cannot create the run folder {path}: {blocker} is a file, not a folder",
                        "choose another --out")


# --- a run's exports ------------------------------------------------------------
EXPORT_RECORD = "export.json"  # the ExportDone event of an export, kept in its folder


def export_label(formats: list[str], quant: str) -> str:
    """``hf``, ``gguf-q8_0``, ``hf+gguf+ollama-f16``: what a default export folder is named after."""
    label = "+".join(formats)
    return f"{label}-{quant}" if {"gguf", "ollama"} & set(formats) else label


def next_export_folder(parent: str | Path, formats: list[str], quant: str) -> Path:
    """``parent/<label>-<n>`` with the next n not yet used by a finished, failed or
    half-written export of that label, so a re-export never collides with an earlier one."""
    parent, label = Path(parent), export_label(formats, quant)
    pattern = re.compile(r"\.?" + re.escape(label) + r"-(\d+)(?:\.|$)")
    used = [int(m.group(1)) for p in (parent.iterdir() if parent.is_dir() else []) if (m := pattern.match(p.name))]
    return parent / f"{label}-{max(used, default=0) + 1}"


def ollama_name(text: str) -> str:
    """A name ``ollama create`` takes: lower case letters, digits, '.', '_' and '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return name or "xgblora-model"


def past_exports(run_path: str | Path) -> list:
    """The ExportDone records of a run's exports (under RUN/exports), oldest first."""
    import msgspec

    from xgblora_engine.protocol import ExportDone

    records = []
    for path in sorted(RunDir(run_path).exports_path.glob(f"**/{EXPORT_RECORD}"), key=lambda p: p.stat().st_mtime):
        try:
            records.append(msgspec.json.decode(path.read_bytes(), type=ExportDone))
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            continue  # a record from another version, or damaged: the folder is still there
    return records
