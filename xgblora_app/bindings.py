"""Two-way links between form widgets and ``RunSettings`` values.

A widget edit sets the value; a value changed elsewhere (a preset, a preflight remedy,
another panel) updates the widget without echoing back.
"""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox, QWidget

from xgblora_app.state.run_settings import RunSettings, help_text
from xgblora_app.widgets import SciSpinBox


class Bindings:
    def __init__(self, settings: RunSettings, costs: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.costs = costs or {}
        self.widgets: dict[tuple[str, str], QWidget] = {}
        settings.subscribe("changed", self._changed)

    def _register(self, section: str, key: str, widget: QWidget) -> QWidget:
        tip = help_text(section, key)
        if key in self.costs:
            tip += f"\nCost: {self.costs[key]}"
        widget.setToolTip(tip)
        self.widgets[(section, key)] = widget
        self._show(widget, self.settings.get(section, key))
        return widget

    def spin(self, section: str, key: str, minimum: int, maximum: int, auto_text: str | None = None) -> QSpinBox:
        """An int spin box; with ``auto_text`` its minimum means None (engine decides)."""
        w = QSpinBox(minimum=minimum, maximum=maximum)
        if auto_text:
            w.setSpecialValueText(auto_text)
        self._register(section, key, w)
        w.valueChanged.connect(lambda v: self.settings.set(
            section, key, None if auto_text and v == minimum else v))
        return w

    def number(self, section: str, key: str, minimum: float, maximum: float, decimals: int = 2,
               auto_text: str | None = None) -> QDoubleSpinBox:
        """A float spin box; with ``auto_text`` its minimum means None (engine decides)."""
        w = QDoubleSpinBox(minimum=minimum, maximum=maximum, decimals=decimals)
        if auto_text:
            w.setSpecialValueText(auto_text)
        self._register(section, key, w)
        w.valueChanged.connect(lambda v: self.settings.set(section, key, None if auto_text and v == minimum else v))
        return w

    def names(self, section: str, key: str, placeholder: str) -> QLineEdit:
        """A comma-separated list of names; empty means None (all of them)."""
        w = QLineEdit(placeholderText=placeholder)
        self._register(section, key, w)
        w.editingFinished.connect(lambda: self.settings.set(
            section, key, [n.strip() for n in w.text().split(",") if n.strip()] or None))
        return w

    def sci(self, section: str, key: str) -> SciSpinBox:
        w = SciSpinBox()
        self._register(section, key, w)
        w.valueChanged.connect(lambda v: self.settings.set(section, key, v))
        return w

    def combo(self, section: str, key: str, items: tuple[str, ...]) -> QComboBox:
        w = QComboBox()
        w.addItems(list(items))
        self._register(section, key, w)
        w.currentTextChanged.connect(lambda v: self.settings.set(section, key, v))
        return w

    def check(self, section: str, key: str, label: str) -> QCheckBox:
        w = QCheckBox(label)
        self._register(section, key, w)
        w.toggled.connect(lambda v: self.settings.set(section, key, v))
        return w

    def _changed(self, section: str, key: str, value) -> None:
        widget = self.widgets.get((section, key))
        if widget is not None:
            self._show(widget, value)

    @staticmethod
    def _show(widget: QWidget, value) -> None:
        widget.blockSignals(True)
        try:
            if isinstance(widget, QSpinBox):
                widget.setValue(widget.minimum() if value is None else int(value))
            elif isinstance(widget, QDoubleSpinBox):
                widget.setValue(widget.minimum() if value is None else float(value))
            elif isinstance(widget, QLineEdit):
                widget.setText(", ".join(value or []))
            elif isinstance(widget, QComboBox):
                widget.setCurrentText(str(value))
            elif isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
        finally:
            widget.blockSignals(False)
