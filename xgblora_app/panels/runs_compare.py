"""Runs side by side: their losses overlaid by step and by training time, their memory,
the settings that differ and the final scores."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from xgblora_app import theme
from xgblora_engine.memory.units import human_bytes
from xgblora_engine.runs import RunSummary, curves, differing_settings, human_duration, loss_text

# one colour per run (the colour-blind-safe palette of the plots), cycled past eight runs
RUN_COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233),
               (240, 228, 66), (0, 0, 0))
PLOTS = (("Held-out loss by step", "eval_step", "eval_loss", "optimizer step"),
         ("Training loss by step", "step", "loss", "optimizer step"),
         ("Held-out loss by training time", "eval_time", "eval_loss", "seconds of optimizer steps"),
         ("Memory by step", "memory_step", "memory", "optimizer step"))


class RunsComparison(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: list[RunSummary] = []
        layout = QVBoxLayout(self)
        self.note = QLabel("Select two or more runs in the table (Ctrl- or Shift-click) to compare them.")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        split = QSplitter(Qt.Orientation.Vertical)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground(theme.plot_background())
        self.plots = {}
        for i, (title, x, y, bottom) in enumerate(PLOTS):
            plot = self.view.addPlot(row=i // 2, col=i % 2, title=title)
            plot.setLabel("bottom", bottom)
            plot.setLabel("left", "bytes" if y == "memory" else "loss", units="B" if y == "memory" else None)
            plot.setMenuEnabled(False)
            if i == 0:  # one legend: a run has the same colour in every plot
                plot.addLegend(offset=(-8, 8), labelTextSize="8pt")
            self.plots[title] = (plot, x, y)
        split.addWidget(self.view)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        split.addWidget(self.table)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout.addWidget(split, 1)

    def show_runs(self, runs: list[RunSummary]) -> None:
        self.runs = runs
        self.note.setVisible(len(runs) < 2)
        for plot, _, _ in self.plots.values():
            plot.clear()
            if plot.legend is not None:
                plot.legend.clear()
        top = 1.0
        for i, run in enumerate(runs if len(runs) > 1 else []):
            data = curves(run)
            top = max([top, *data["memory"]])
            pen = pg.mkPen(RUN_COLOURS[i % len(RUN_COLOURS)], width=2)
            for plot, x, y in self.plots.values():
                marks = {"symbol": "o", "symbolSize": 5, "symbolPen": None,
                         "symbolBrush": RUN_COLOURS[i % len(RUN_COLOURS)]} if y == "eval_loss" else {}
                plot.plot(data[x], data[y], pen=pen, name=run.name, **marks)
        memory, _, _ = self.plots["Memory by step"]
        memory.setYRange(0, top * 1.05)  # from zero: the gap between runs reads true
        self._fill_table(runs if len(runs) > 1 else [])

    def _fill_table(self, runs: list[RunSummary]) -> None:
        """Final scores first, then every setting the runs do not share."""
        rows = [("final training loss", [loss_text(r.final_loss) for r in runs]),
                ("final held-out loss", [loss_text(r.final_eval_loss) for r in runs]),
                ("sample token F1", ["–" if r.sample_f1 is None else f"{r.sample_f1:.2f}" for r in runs]),
                ("steps", [str(r.trained_steps) for r in runs]),
                ("training time", [human_duration(r.train_seconds) for r in runs]),
                ("peak memory", ["–" if r.peak_bytes is None else human_bytes(r.peak_bytes) for r in runs])]
        differ = differing_settings(runs)
        rows += [(key, ["auto" if v is None else str(v) for v in values]) for key, values in differ]
        if runs and not differ:
            rows.append(("settings", ["the same"] * len(runs)))
        self.table.clear()
        self.table.setRowCount(len(rows) if runs else 0)
        self.table.setColumnCount(len(runs))
        self.table.setHorizontalHeaderLabels([r.name for r in runs])
        self.table.setVerticalHeaderLabels([label for label, _ in rows] if runs else [])
        for row, (_, values) in enumerate(rows if runs else []):
            for col, text in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
