"""What the window knows beyond the settings: the inspected model and data, the
current run, the last preflight. Panels publish here and observe each other through it."""

from __future__ import annotations

from pathlib import Path

from xgblora_app.state.observable import Observable
from xgblora_engine import protocol as P
from xgblora_engine.payloads import DataReport, ModelInfo


class Session(Observable):
    """Topics: "model_info", "data_report", "run_dir", "preflight", "runs_changed",
    "show_run" (a panel asks the window to show a run elsewhere)."""

    def __init__(self, runs_root: Path) -> None:
        super().__init__()
        self.runs_root = Path(runs_root)
        self.model_info: ModelInfo | None = None
        self.data_report: DataReport | None = None
        self.run_dir: str | None = None
        self.preflight: P.PreflightResult | None = None

    def set_model_info(self, info: ModelInfo | None) -> None:
        self.model_info = info
        self.notify("model_info", info)

    def set_data_report(self, report: DataReport | None) -> None:
        self.data_report = report
        self.notify("data_report", report)

    def set_run_dir(self, run_dir: str | None) -> None:
        self.run_dir = run_dir
        self.notify("run_dir", run_dir)

    def set_preflight(self, result: P.PreflightResult | None) -> None:
        self.preflight = result
        self.notify("preflight", result)

    @property
    def n_layers(self) -> int | None:
        return self.model_info.n_layers if self.model_info else None
