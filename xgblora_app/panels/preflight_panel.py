"""Preflight: will the run fit in memory? The engine's estimate as a bar of its parts
against the available memory, the verdict, and its remedies as one-click buttons that
change the settings."""

from __future__ import annotations

import html

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from xgblora_app import theme
from xgblora_app.context import Studio
from xgblora_app.format import human_bytes
from xgblora_app.widgets import Banner, section_title
from xgblora_engine import protocol as P
from xgblora_engine.payloads import VERDICT_WORDS, Remedy

PART_COLOURS = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
                (240, 228, 66)]


class MemoryBar(QWidget):
    """Predicted peak, part by part, against the available memory (a vertical mark)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: P.PreflightResult | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(500, self.fontMetrics().height() * 4 + 24)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(200, self.sizeHint().height())

    def set_result(self, result: P.PreflightResult | None) -> None:
        self.result = result
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        if self.result is None:
            return
        r = self.result
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(QPalette.ColorRole.Text)
        line = self.fontMetrics().height()
        scale_max = max(r.predicted_peak, r.available, 1) * 1.08
        width = self.width() - 4
        x_of = lambda v: 2 + width * v / scale_max  # noqa: E731
        bar = QRectF(2, line + 6, width, line * 1.6)
        p.fillRect(bar, self.palette().color(QPalette.ColorRole.AlternateBase))
        x = 2.0
        total_parts = sum(r.parts.values()) or 1
        for i, size in enumerate(r.parts.values()):
            # the parts are drawn in proportion, stretched to the predicted peak
            w = width * (size / total_parts) * r.predicted_peak / scale_max
            p.fillRect(QRectF(x, bar.top(), w, bar.height()), QColor(*PART_COLOURS[i % len(PART_COLOURS)]))
            x += w
        verdict = QColor(*theme.VERDICT[r.verdict])
        ax = x_of(r.available)
        p.setPen(verdict)
        p.drawLine(int(ax), int(bar.top()) - 4, int(ax), int(bar.bottom()) + 4)
        p.setPen(text)
        p.drawText(QRectF(2, 0, width, line), Qt.AlignmentFlag.AlignLeft,
                   f"predicted peak {human_bytes(r.predicted_peak)}"
                   + (f" (measured trial {human_bytes(r.measured_peak)})" if r.measured_peak else ""))
        label = f"available on {r.device}: {human_bytes(r.available)}"
        label_w = self.fontMetrics().horizontalAdvance(label)
        lx = min(max(2.0, ax - label_w / 2), width - label_w)
        p.drawText(QRectF(lx, bar.bottom() + 6, label_w + 4, line), Qt.AlignmentFlag.AlignLeft, label)


class PreflightPanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.estimate_ids: set[int] = set()
        self.remedy_buttons: list[QPushButton] = []
        self._build()
        studio.bridge.preflight_result.connect(self.show_result)
        studio.bridge.error.connect(self._on_error)
        studio.settings.subscribe("changed", self._settings_changed)

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(section_title("Memory preflight"))
        intro = QLabel("Before training, the engine adds up what a step holds at its peak (weights, boosters and "
                       "optimizer state, activations for the layers backward reaches, logits, runtime) and, "
                       "optionally, measures a few real steps on the longest batch with the deepest layer set.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run preflight")
        self.run_button.clicked.connect(self.run)
        self.trial = QCheckBox("Measure a trial of real steps")
        self.trial.setChecked(True)
        self.limit = QDoubleSpinBox(minimum=0.0, maximum=4096.0, decimals=1, singleStep=1.0)
        self.limit.setSpecialValueText("device free memory")
        self.limit.setSuffix(" GB")
        self.limit.setToolTip("check against this much memory instead of what the device has free "
                              "(a shared GPU, or a margin for other programs)")
        for w in (self.run_button, self.trial, QLabel("Usable memory:"), self.limit):
            row.addWidget(w)
        row.addStretch(1)
        layout.addLayout(row)
        self.banner = Banner()
        layout.addWidget(self.banner)
        self.verdict = QLabel("Not run yet.")
        font = self.verdict.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        self.verdict.setFont(font)
        layout.addWidget(self.verdict)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        self.bar = MemoryBar()
        layout.addWidget(self.bar)
        self.parts = QLabel("")
        self.parts.setWordWrap(True)
        layout.addWidget(self.parts)
        self.remedies_box = QGroupBox("Remedies (largest saving first): one click changes the settings")
        self.remedies_layout = QVBoxLayout(self.remedies_box)
        self.remedies_box.hide()
        layout.addWidget(self.remedies_box)
        layout.addStretch(1)

    def memory_limit(self) -> int | None:
        return int(self.limit.value() * 2**30) if self.limit.value() > 0 else None

    def run(self) -> None:
        try:
            cfg = self.studio.settings.validated()
        except Exception as exc:  # noqa: BLE001 - a UserError from validation, shown in place
            self.banner.show_message("error", getattr(exc, "message", str(exc)), getattr(exc, "hint", ""))
            return
        self.banner.clear()
        self.verdict.setText("Estimating…")
        self.message.setText("Loading the model and measuring; this takes as long as loading the model "
                             "plus a few steps." if self.trial.isChecked() else "Loading the model…")
        self.estimate_ids.add(self.studio.bridge.submit(P.Estimate(
            config=cfg, trial=self.trial.isChecked(), memory_limit_bytes=self.memory_limit())))

    def show_result(self, r: P.PreflightResult) -> None:
        self.studio.session.set_preflight(r)
        self.banner.clear()
        colour = theme.VERDICT[r.verdict]
        self.verdict.setText(VERDICT_WORDS[r.verdict].capitalize())
        self.verdict.setStyleSheet(f"color: rgb{colour};")
        self.message.setText(r.message)
        self.bar.set_result(r)
        swatches = []
        for i, (name, size) in enumerate(r.parts.items()):
            c = PART_COLOURS[i % len(PART_COLOURS)]
            swatches.append(f"<span style='color:rgb{c}'>■</span> {html.escape(name)} {human_bytes(size)}")
        self.parts.setText(" &nbsp; ".join(swatches))
        self._show_remedies(r.remedies)

    def _show_remedies(self, remedies: list[Remedy]) -> None:
        for button in self.remedy_buttons:
            button.deleteLater()
        self.remedy_buttons = []
        for remedy in remedies:
            button = QPushButton(f"{remedy.label}  — saves {human_bytes(remedy.saves_bytes)}")
            button.setStyleSheet("text-align: left; padding: 4px 8px;")
            button.clicked.connect(lambda _=False, r=remedy: self.apply(r))
            self.remedies_layout.addWidget(button)
            self.remedy_buttons.append(button)
        self.remedies_box.setVisible(bool(remedies))

    def apply(self, remedy: Remedy) -> None:
        self.studio.settings.update(remedy.changes)
        self.banner.show_message("info", f"Applied: {remedy.label}.", "Run the preflight again to check.",
                                 [("Run preflight", self.run)])

    def _settings_changed(self, *_) -> None:
        if self.studio.session.preflight is not None and not self.verdict.text().endswith("(settings changed)"):
            self.verdict.setText(self.verdict.text() + " (settings changed)")

    def _on_error(self, e: P.Error) -> None:
        if e.job_id in self.estimate_ids:
            self.verdict.setText("Preflight failed")
            self.verdict.setStyleSheet("")
            self.banner.show_message("error", e.message, e.hint)
