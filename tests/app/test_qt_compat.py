"""The app runs only on Qt bindings that do not leak references with every repaint."""

import sys

import pytest

from xgblora_app.qt_compat import binding_problem


def test_the_leaking_release_is_refused_on_the_pythons_it_breaks():
    problem = binding_problem("6.12.0", (3, 11))
    assert "PySide6 6.12.0 on Python 3.11 leaks references" in problem
    assert "pip install 'PySide6-Essentials!=6.12.0'" in problem
    assert binding_problem("6.12.0", (3, 12)) is None
    assert binding_problem("6.11.3", (3, 11)) is None


def test_the_pinned_requirement_excludes_the_leaking_release():
    from pathlib import Path

    import tomllib

    from xgblora_app.qt_compat import LEAKING

    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    [pyside] = [d for d in deps if d.startswith("PySide6")]
    assert all(f"!={version}" in pyside for version in LEAKING)


def test_painting_python_items_many_times_leaks_no_reference(qtbot):
    if binding_problem() is not None:
        pytest.skip(binding_problem())
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene

    class Item(QGraphicsItem):
        def boundingRect(self):  # noqa: N802 - Qt's name
            return QRectF(0, 0, 4, 4)

        def paint(self, painter, *args):
            pass

    scene = QGraphicsScene()
    items = [Item() for _ in range(100)]
    for item in items:
        scene.addItem(item)
    image = QImage(16, 16, QImage.Format.Format_ARGB32)
    before = sys.getrefcount(None)
    for _ in range(300):  # 30 000 void-virtual calls
        painter = QPainter(image)
        scene.render(painter)
        painter.end()
    assert sys.getrefcount(None) > before - 1000
