"""A picture of the model's layers: which ones the first rounds boost.

Drawn with the engine's own sampler (``sampling.sample_layers``, seeded by seed and
round), so the picture is the draw the run will make, not an illustration.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

from xgblora_app import theme
from xgblora_engine.boosting.sampling import sample_layers
from xgblora_engine.errors import UserError

ROUNDS_SHOWN = 4


class LayerPicture(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.n_layers: int | None = None
        self.rows: list[list[int]] = []
        self.note = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(self.sizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        line = self.fontMetrics().height()
        return QSize(480, line * 2 + ROUNDS_SHOWN * (line + 6) + 8)

    def update_draws(self, n_layers: int | None, k: int | None, seed: int, sampling: str,
                     explicit: list[int] | None, rounds: int = ROUNDS_SHOWN) -> None:
        """The layers of the first rounds (at most ROUNDS_SHOWN, and no more than the run has)."""
        self.n_layers, self.rows, self.note = n_layers, [], ""
        if not n_layers or not k:
            self.note = "The layer picture appears once the model's layer count is known (Model: Load model info)."
        else:
            try:
                strategy = "explicit" if explicit else sampling
                self.rows = [sample_layers(n_layers, k, seed, r, strategy, explicit)
                             for r in range(1, min(rounds, ROUNDS_SHOWN) + 1)]
            except UserError as exc:
                self.note = exc.message
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.Text)
        line = self.fontMetrics().height()
        if self.note:
            p.setPen(text)
            p.drawText(self.rect().adjusted(4, 4, -4, -4), Qt.TextFlag.TextWordWrap, self.note)
            return
        label_w = self.fontMetrics().horizontalAdvance("round 00  ")
        cell_w = (self.width() - label_w - 8) / self.n_layers
        empty, boosted = theme.heat_colors()
        for r, layers in enumerate(self.rows):
            y = line + 4 + r * (line + 6)
            p.setPen(text)
            p.drawText(QRectF(0, y, label_w, line), Qt.AlignmentFlag.AlignVCenter, f"round {r + 1}")
            chosen = set(layers)
            for i in range(self.n_layers):
                rect = QRectF(label_w + i * cell_w + 1, y, max(1.0, cell_w - 2), line)
                p.fillRect(rect, boosted if i in chosen else empty)
        # layer numbers under the last row, every few layers so they never overlap
        y = line + 4 + len(self.rows) * (line + 6)
        step = max(1, int(self.fontMetrics().horizontalAdvance("000 ") // max(1.0, cell_w)) + 1)
        p.setPen(QColor(text))
        for i in range(0, self.n_layers, step):
            p.drawText(QRectF(label_w + i * cell_w, y, cell_w * step, line), Qt.AlignmentFlag.AlignLeft, str(i))
        p.drawText(QRectF(0, 0, self.width(), line), Qt.AlignmentFlag.AlignLeft,
                   f"layer 0 (bottom) … {self.n_layers - 1} (top): boosted layers of the first rounds")
