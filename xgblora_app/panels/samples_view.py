"""What the model answers while it trains: the same held-out prompts at every evaluation,
the reference, the base model's answer (step 0) and the answer at the chosen step."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from xgblora_app.state.series import TrainingSeries

EMPTY = ("Sample answers appear at the first evaluation: the model answers a few held-out prompts "
         "(Method: samples) every time the held-out loss is measured.")
PROMPT_SHOWN = 160  # characters of the rendered prompt's end: the question, after the system text


class SamplesView(QWidget):
    def __init__(self, series: TrainingSeries, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series = series
        self.shown = -1  # how many evaluations the step menu lists
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Answers at"))
        self.step = QComboBox()
        self.step.setToolTip("Every evaluation of the run; the newest is followed as the run goes")
        self.step.currentIndexChanged.connect(lambda _: self._show())
        row.addWidget(self.step, 1)
        layout.addLayout(row)
        self.note = QLabel(EMPTY)
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.table = QTableWidget(0, 4)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)  # equal columns
        layout.addWidget(self.table, 1)

    def refresh(self, force: bool = False) -> None:
        """Take in new evaluations; the newest is selected when the newest was on show.
        ``force``: the series was refilled (another run opened)."""
        samples = self.series.samples
        if len(samples) == self.shown and not force:
            return
        previous = self.step.currentIndex()
        following = previous in (-1, self.step.count() - 1)
        self.shown = len(samples)
        self.step.blockSignals(True)
        self.step.clear()
        for s in samples:
            self.step.addItem(f"step {s.step}: token F1 {s.token_f1:.2f}, exact {s.exact_match:.0%}")
        if samples:
            self.step.setCurrentIndex(len(samples) - 1 if following else min(previous, len(samples) - 1))
        self.step.blockSignals(False)
        self._show()

    @property
    def _index(self) -> int:
        return max(self.step.currentIndex(), 0)

    def _show(self) -> None:
        samples = self.series.samples
        self.note.setVisible(not samples)
        self.table.setRowCount(0)
        if not samples:
            return
        chosen = samples[self._index]
        base = samples[0] if samples[0].step == 0 else None
        headers = ["Prompt", "Reference", f"At step {chosen.step}"]
        if base is not None and base is not chosen:
            headers.insert(2, "Base model (step 0)")
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        before = {a.prompt: a.answer for a in base.answers} if base is not None else {}
        for row, a in enumerate(chosen.answers):
            cells = [_tail(a.prompt), a.reference, a.answer]
            if len(headers) == 4:
                cells.insert(2, before.get(a.prompt, ""))
            self.table.insertRow(row)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(a.prompt if col == 0 else text)
                self.table.setItem(row, col, item)
        self.table.resizeRowsToContents()


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PROMPT_SHOWN else "…" + text[-(PROMPT_SHOWN - 1):]
