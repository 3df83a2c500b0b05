"""Small widgets shared by the panels."""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from xgblora_app import theme
from xgblora_app.state.session import Session
from xgblora_engine.runs import list_runs

KIND_COLOURS = {"info": (0, 114, 178), "ok": (0, 158, 115), "warning": (230, 159, 0), "error": (213, 60, 0)}


class Banner(QFrame):
    """A message inside a panel, with what to do about it and optional action buttons.

    Used instead of dialogs: a bad file or a dead worker is explained in place and the
    window stays usable."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.kind = "info"
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QHBoxLayout()
        self.buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addWidget(self.label)
        layout.addLayout(self.buttons)
        self.hide()

    def show_message(self, kind: str, message: str, hint: str = "",
                     actions: list[tuple[str, Callable[[], None]]] = ()) -> list[QPushButton]:
        self.kind = kind
        rgb = KIND_COLOURS[kind]
        self.setStyleSheet(f"QFrame#banner {{ background: {theme.tint(rgb, 40)}; "
                           f"border: 1px solid {theme.tint(rgb, 160)}; border-radius: 5px; }}")
        text = f"<b>{html.escape(message)}</b>"
        if hint:
            text += f"<br>{html.escape(hint)}"
        self.label.setText(text)
        self._clear_buttons()
        made = []
        for label, callback in actions:
            button = QPushButton(label)
            button.clicked.connect(callback)
            self.buttons.addWidget(button)
            made.append(button)
        self.show()
        return made

    def text(self) -> str:
        return self.label.text()

    def clear(self) -> None:
        self.kind = "info"
        self._clear_buttons()
        self.label.clear()
        self.hide()

    def _clear_buttons(self) -> None:
        while self.buttons.count() > 1:
            item = self.buttons.takeAt(1)
            if item.widget():
                item.widget().deleteLater()


class SciSpinBox(QDoubleSpinBox):
    """A spin box for learning rates: shows 2e-03, steps by doubling and halving."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)
        self.setRange(1e-9, 10.0)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt's name
        return f"{value:.3g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        from PySide6.QtGui import QValidator

        try:
            value = float(text)
        except ValueError:
            return QValidator.State.Intermediate, text, pos
        ok = math.isfinite(value) and self.minimum() <= value <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802
        self.setValue(self.value() * 2.0 ** steps)


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(object)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], object], signals: _Signals) -> None:
        super().__init__()
        self.fn, self.signals = fn, signals

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # noqa: BLE001 - handed to the GUI thread, shown in the panel
            self.signals.failed.emit(exc)
        else:
            self.signals.done.emit(result)


def run_in_background(fn: Callable[[], object], on_done: Callable[[object], None],
                      on_error: Callable[[Exception], None], owner: QObject) -> None:
    """Run ``fn`` off the GUI thread; the callbacks run back in the GUI thread."""
    signals = _Signals(owner)  # parented: lives until the owner goes
    signals.done.connect(on_done)
    signals.failed.connect(on_error)
    signals.done.connect(signals.deleteLater)
    signals.failed.connect(signals.deleteLater)
    QThreadPool.globalInstance().start(_Task(fn, signals))


def section_title(text: str) -> QLabel:
    label = QLabel(text)
    font = label.font()
    font.setBold(True)
    font.setPointSizeF(font.pointSizeF() * 1.1)
    label.setFont(font)
    return label


class RunPicker(QComboBox):
    """The runs that have something to export or try (at least one merged round).

    Follows the runs folder and the window's current run; ``picked`` carries the chosen
    run folder ("" when there is none) whenever the choice may have changed."""

    picked = Signal(str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.currentIndexChanged.connect(lambda _: self.picked.emit(self.run_dir() or ""))
        session.subscribe("runs_changed", self.refresh)
        session.subscribe("run_dir", lambda _: self.refresh())

    def run_dir(self) -> str | None:
        return self.currentData()

    def refresh(self) -> None:
        current = self.run_dir() or self.session.run_dir
        self.blockSignals(True)
        self.clear()
        for r in list_runs(self.session.runs_root):
            if r.exportable:
                self.addItem(f"{r.name} — {r.status}, step {r.step}", str(r.path))
        index = self.findData(current) if current else -1
        self.setCurrentIndex(max(0, index))
        self.blockSignals(False)
        self.picked.emit(self.run_dir() or "")

    def select(self, run_dir: str) -> None:
        self.refresh()
        index = self.findData(run_dir)
        if index >= 0:
            self.setCurrentIndex(index)
