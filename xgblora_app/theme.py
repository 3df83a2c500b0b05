"""Light and dark follow the system: Qt picks the palette, plots take their colours from it."""

from __future__ import annotations

from PySide6.QtGui import QColor, QGuiApplication, QPalette

# Series colours chosen to read on both a light and a dark background (Okabe–Ito hues).
SERIES = {
    "raw": (86, 180, 233), "smooth": (0, 114, 178), "eval": (213, 94, 0), "merge": (204, 121, 167),
    "rss": (0, 158, 115), "allocated": (230, 159, 0), "predicted": (213, 94, 0),
    "speed": (0, 114, 178), "lr": (204, 121, 167), "f1": (0, 158, 115),
}
VERDICT = {"fits": (0, 158, 115), "tight": (230, 159, 0), "wont_fit": (213, 60, 0)}


def palette() -> QPalette:
    return QGuiApplication.palette()


def is_dark(pal: QPalette | None = None) -> bool:
    return (pal or palette()).color(QPalette.ColorRole.Window).lightness() < 128


def plot_background() -> QColor:
    return palette().color(QPalette.ColorRole.Base)


def plot_foreground() -> QColor:
    return palette().color(QPalette.ColorRole.Text)


def tint(rgb: tuple[int, int, int], alpha: int = 48) -> str:
    """A translucent fill that reads on light and dark windows alike (for stylesheets)."""
    return f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha})"


def heat_colors() -> tuple[QColor, QColor]:
    """Empty cell, boosted cell."""
    empty = plot_background().darker(115) if not is_dark() else plot_background().lighter(160)
    return empty, QColor(*SERIES["smooth"]) if not is_dark() else QColor(*SERIES["raw"])
