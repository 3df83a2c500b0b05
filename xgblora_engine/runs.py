"""The run history, read from run folders: what the Runs panel lists and compares, and
what `xgblora runs` prints. Torch-free: the app imports it.

Everything comes from the files a run writes (``rundir``): run.json for the status,
config.yaml for the settings, metrics.jsonl for the curves, the time and the memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xgblora_engine.config import load_config_file
from xgblora_engine.errors import UserError
from xgblora_engine.memory.units import human_bytes
from xgblora_engine.rundir import RunDir, named_run

# "training"/"preparing" on a run nobody is running means its worker died mid-run.
RESUMABLE = {"stopped", "failed", "training", "preparing"}
# The runs table, in the Runs panel and in `xgblora runs`.
COLUMNS = ("Run", "Status", "Model", "Data", "Rank", "k", "κ", "lr", "Steps", "Loss", "Held-out", "Sample F1",
           "Time", "Peak")


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
    info: dict[str, Any] = field(default_factory=dict)  # run.json as read
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # config.yaml as read
    trained_steps: int = 0  # steps in metrics.jsonl: past ``step`` when a run died between checkpoints
    train_seconds: float | None = None  # optimizer steps only (no loading, no evaluation)
    peak_bytes: int | None = None  # the highest memory reading of the run
    sample_f1: float | None = None  # the last sample answers' token F1

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE

    @property
    def exportable(self) -> bool:
        return self.step > 0 and self.status not in ("corrupt", "preparing")

    def setting(self, section: str, key: str) -> Any:
        return self.settings.get(section, {}).get(key)


def summarize(path: Path) -> RunSummary:
    run = RunDir(path)
    try:
        s = run.status()
    except UserError as exc:
        return RunSummary(Path(path), "corrupt", message=exc.message)
    summary = RunSummary(Path(path), str(s.get("status", "?")), model=str(s.get("model", "")),
                         data=str(s.get("data", "")), step=int(s.get("step") or 0), total_steps=s.get("total_steps"),
                         final_loss=s.get("final_loss"), final_eval_loss=s.get("final_eval_loss"),
                         updated=float(s.get("updated") or s.get("created") or 0.0),
                         message=str(s.get("message", "")), info=s, settings=_settings(run))
    last_step, summary.train_seconds, summary.peak_bytes, summary.sample_f1 = _from_metrics(run)
    summary.trained_steps = max(summary.step, last_step)
    return summary


# metrics.jsonl path -> (its size and mtime, what it says): the Runs panel lists every run
# at each refresh, in the GUI thread, and a finished run's metrics never change.
_read: dict[Path, tuple[tuple[int, int], tuple]] = {}


def _from_metrics(run: RunDir) -> tuple[int, float | None, int | None, float | None]:
    """(last step, seconds of optimizer steps, peak memory, last sample F1) of a run."""
    try:
        stat = run.metrics_path.stat()
    except OSError:
        return 0, None, None, None
    key = (stat.st_size, stat.st_mtime_ns)
    cached = _read.get(run.metrics_path)
    if cached is not None and cached[0] == key:
        return cached[1]
    metrics = run.metrics()
    steps = [m for m in metrics if "seconds" in m]
    memory = [m["memory"] for m in metrics if "memory" in m]
    scores = [m["token_f1"] for m in metrics if "token_f1" in m]
    found = (max((m["step"] for m in steps), default=0), sum(m["seconds"] for m in steps) if steps else None,
             max(memory) if memory else None, scores[-1] if scores else None)
    _read[run.metrics_path] = (key, found)
    return found


def _settings(run: RunDir) -> dict[str, dict[str, Any]]:
    try:
        return load_config_file(run.config_path)
    except (OSError, UserError):
        return {}


def list_runs(root: Path) -> list[RunSummary]:
    """Every folder under ``root`` holding a run.json, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [summarize(p.parent) for p in root.glob("*/run.json")]
    return sorted(runs, key=lambda r: (r.updated, r.name), reverse=True)


def find_run(name_or_path: str, root: Path) -> RunSummary:
    """A run by its folder, or by its name in the runs root."""
    path = named_run(name_or_path, root)
    if not (path / "run.json").is_file():
        raise UserError(f"no run called {name_or_path!r}: neither a run folder nor a run in {root}",
                        "`xgblora runs` lists the runs there; give a name from it or a run folder")
    return summarize(path)


def differing_settings(runs: list[RunSummary]) -> list[tuple[str, list[Any]]]:
    """("section.key", the value in each run) for every setting the runs do not share."""
    keys = sorted({(section, key) for r in runs for section, values in r.settings.items()
                   if isinstance(values, dict) for key in values})
    rows = []
    for section, key in keys:
        values = [r.setting(section, key) for r in runs]
        if any(v != values[0] for v in values[1:]):
            rows.append((f"{section}.{key}", values))
    return rows


def curves(run: RunSummary) -> dict[str, list[float]]:
    """A run's training and held-out loss by step and by training time, and its memory by
    step (metrics.jsonl), for plots that overlay runs."""
    out: dict[str, list[float]] = {k: [] for k in ("step", "loss", "time", "eval_step", "eval_loss", "eval_time",
                                                    "memory_step", "memory")}
    elapsed = 0.0
    for m in RunDir(run.path).metrics():
        if "loss" in m and "seconds" in m:
            elapsed += m["seconds"]
            out["step"].append(m["step"])
            out["loss"].append(m["loss"])
            out["time"].append(elapsed)
        elif "eval_loss" in m:
            out["eval_step"].append(m["step"])
            out["eval_loss"].append(m["eval_loss"])
            out["eval_time"].append(elapsed)
        elif "memory" in m:
            out["memory_step"].append(m["step"])
            out["memory"].append(m["memory"])
    return out


def cells(run: RunSummary) -> list[str]:
    """The run's row of the runs table (COLUMNS), as text."""
    steps = f"{run.trained_steps}" + (f" / {run.total_steps}" if run.total_steps else "")
    k = run.setting("boost", "layers_per_round")
    return [run.name, run.status, run.model, run.data, _text(run.setting("boost", "rank")), _text(k),
            _text(run.setting("boost", "merge_every")), _text(run.setting("train", "lr")), steps,
            loss_text(run.final_loss), loss_text(run.final_eval_loss),
            "–" if run.sample_f1 is None else f"{run.sample_f1:.2f}", human_duration(run.train_seconds),
            "–" if run.peak_bytes is None else human_bytes(run.peak_bytes)]


def sort_key(run: RunSummary, column: int):
    """What a column sorts by: numbers as numbers, missing values last."""
    numbers = {4: run.setting("boost", "rank"), 5: run.setting("boost", "layers_per_round"),
               6: run.setting("boost", "merge_every"), 7: run.setting("train", "lr"), 8: run.trained_steps,
               9: run.final_loss, 10: run.final_eval_loss, 11: run.sample_f1, 12: run.train_seconds,
               13: run.peak_bytes}
    if column in numbers:
        value = numbers[column]
        return (value is None, value if value is not None else 0)
    return (False, cells(run)[column])


def human_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def _text(value: Any) -> str:
    return "auto" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def loss_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
