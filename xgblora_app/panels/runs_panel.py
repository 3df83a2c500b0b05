"""Runs: the history of runs (their folders), each reopened with its plots redrawn from
its event log; resume, export, try or delete one."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from xgblora_app.context import Studio
from xgblora_app.panels.runs_compare import RunsComparison
from xgblora_app.panels.samples_view import SamplesView
from xgblora_app.plots import TrainingPlots
from xgblora_app.state.runs import config_text, delete_run, load_events
from xgblora_app.state.series import TrainingSeries
from xgblora_app.widgets import Banner, section_title
from xgblora_engine.runs import COLUMNS as RUN_COLUMNS
from xgblora_engine.runs import RunSummary, cells, list_runs, sort_key

COLUMNS = (*RUN_COLUMNS, "Updated")


class RunsPanel(QWidget):
    resume_requested = Signal(str)
    export_requested = Signal(str)
    try_requested = Signal(str)
    settings_copied = Signal(str)  # a run's settings are now the form's: show the Method page

    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.runs: list[RunSummary] = []
        self.series = TrainingSeries()
        self._build()
        self.refresh()
        studio.session.subscribe("runs_changed", self.refresh)
        studio.bridge.run_started.connect(lambda _: self.refresh())

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(section_title("Runs"))
        self.where = QLabel(f"Run folders in {self.studio.session.runs_root}")
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.where)
        self.banner = Banner()
        layout.addWidget(self.banner)
        buttons = QHBoxLayout()
        self.refresh_button = QPushButton("Refresh")
        self.resume_button = QPushButton("Resume")
        self.export_button = QPushButton("Export…")
        self.try_button = QPushButton("Try it…")
        self.copy_button = QPushButton("New run from this")
        self.copy_button.setToolTip("Take this run's settings (model, data, method) into the form, for a new run")
        self.copy_button.clicked.connect(self.copy_settings)
        self.folder_button = QPushButton("Open folder")
        self.delete_button = QPushButton("Delete…")
        self.refresh_button.clicked.connect(self.refresh)
        self.resume_button.clicked.connect(lambda: self._emit(self.resume_requested))
        self.export_button.clicked.connect(lambda: self._emit(self.export_requested))
        self.try_button.clicked.connect(lambda: self._emit(self.try_requested))
        self.folder_button.clicked.connect(self._open_folder)
        self.delete_button.clicked.connect(self.delete_selected)
        for b in (self.refresh_button, self.resume_button, self.export_button, self.try_button,
                  self.copy_button, self.folder_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)  # several: compare them
        self.table.horizontalHeader().setSectionsClickable(True)
        self.table.horizontalHeader().sectionClicked.connect(self.sort_by)
        self.sorted_by: tuple[int, bool] | None = None  # (column, descending); None: newest first
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selected)
        split.addWidget(self.table)
        self.details = details = QTabWidget()
        self.plots = TrainingPlots(self.series)
        self.comparison = RunsComparison()
        self.config_view = QPlainTextEdit()
        self.config_view.setReadOnly(True)
        self.samples_view = SamplesView(self.series)
        details.addTab(self.plots, "Plots")
        details.addTab(self.samples_view, "Samples")
        details.addTab(self.config_view, "Settings")
        details.addTab(self.comparison, "Compare")
        split.addWidget(details)
        split.setStretchFactor(1, 3)
        layout.addWidget(split, 1)
        self._update_buttons()

    # --- listing --------------------------------------------------------------------
    def refresh(self) -> None:
        selected = self.selected()
        self.runs = list_runs(self.studio.session.runs_root)
        if self.sorted_by is not None:
            column, descending = self.sorted_by
            self.runs.sort(key=lambda r: self._sort_key(r, column), reverse=descending)
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.runs))
        for row, r in enumerate(self.runs):
            updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated)) if r.updated else ""
            for col, text in enumerate([*cells(r), updated]):
                item = QTableWidgetItem(text)
                item.setToolTip(r.message or str(r.path))
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self.table.blockSignals(False)
        if selected is not None:
            self.select(str(selected.path))
        self._update_buttons()

    def sort_by(self, column: int) -> None:
        """A header click sorts by that column; a second click reverses it."""
        descending = self.sorted_by == (column, False)
        self.sorted_by = (column, descending)
        self.table.horizontalHeader().setSortIndicator(
            column, Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.refresh()

    @staticmethod
    def _sort_key(run: RunSummary, column: int):
        return (False, run.updated) if column == len(RUN_COLUMNS) else sort_key(run, column)

    def count(self) -> int:
        return len(self.runs)

    def selected(self) -> RunSummary | None:
        """The run the buttons act on: the one selected (None with none or several)."""
        chosen = self.chosen()
        return chosen[0] if len(chosen) == 1 else None

    def chosen(self) -> list[RunSummary]:
        rows = sorted(i.row() for i in self.table.selectionModel().selectedRows())
        return [self.runs[r] for r in rows if r < len(self.runs)]

    def select(self, run_dir: str) -> None:
        for row, r in enumerate(self.runs):
            if str(r.path) == str(run_dir):
                self.table.clearSelection()  # that run alone (selectRow adds to a selection under Ctrl)
                self.table.selectRow(row)
                return

    # --- one run -------------------------------------------------------------------
    def _selected(self) -> None:
        chosen = self.chosen()
        self._update_buttons()
        self.comparison.show_runs(chosen)
        if len(chosen) == 1:
            self.open_run(chosen[0])
        elif len(chosen) > 1:
            self.details.setCurrentWidget(self.comparison)

    def open_run(self, run: RunSummary) -> None:
        """Redraw the run's plots from its events.jsonl, in one go."""
        self.banner.clear()
        events, bad = load_events(run.path)
        self.series.clear()
        self.series.extend(events)
        self.plots.refresh(force=True)
        self.samples_view.refresh(force=True)
        self.config_view.setPlainText(config_text(run.path))
        if run.status == "corrupt":
            self.banner.show_message("error", run.message, "its checkpoints may still be intact: try Resume")
        elif bad:
            self.banner.show_message("warning", f"{bad} event records of this run could not be read",
                                     "the plots show the rest")

    def _update_buttons(self) -> None:
        run = self.selected()
        busy = self.studio.bridge.busy
        self.resume_button.setEnabled(run is not None and run.resumable and not busy)
        self.export_button.setEnabled(run is not None and run.exportable)
        self.try_button.setEnabled(run is not None and run.exportable)
        self.folder_button.setEnabled(run is not None)
        self.copy_button.setEnabled(run is not None and bool(run.settings))
        self.delete_button.setEnabled(run is not None and str(run.path) != self._active_run())

    def _active_run(self) -> str | None:
        return self.studio.session.run_dir if self.studio.bridge.busy else None

    def _emit(self, signal) -> None:
        run = self.selected()
        if run is not None:
            signal.emit(str(run.path))

    def copy_settings(self) -> None:
        run = self.selected()
        if run is None:
            return
        skipped = self.studio.settings.load(run.settings)
        if skipped:
            self.banner.show_message("warning", f"{run.name}'s settings were taken, except {', '.join(skipped)}",
                                     "those values are not valid any more; the current ones were kept")
        self.settings_copied.emit(str(run.path))

    def _open_folder(self) -> None:
        run = self.selected()
        if run is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(run.path)))

    def delete_selected(self) -> None:
        run = self.selected()
        if run is None:
            return
        answer = QMessageBox.question(self, "Delete run",
                                      f"Delete {run.name} with its checkpoints and exports?\n{run.path}\n\n"
                                      "This cannot be undone.")
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            delete_run(Path(run.path))
        except OSError as exc:
            self.banner.show_message("error", f"could not delete {run.name}: {exc}")
        self.series.clear()
        self.plots.refresh(force=True)
        self.samples_view.refresh(force=True)
        self.config_view.clear()
        if self.studio.session.run_dir == str(run.path):
            self.studio.session.set_run_dir(None)
        self.studio.session.notify("runs_changed")  # this list and the Export / Try-it run menus
