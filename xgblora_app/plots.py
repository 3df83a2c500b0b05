"""Live plots of a run (pyqtgraph), drawn from a ``TrainingSeries``.

Events only join the series' inbox; a 20 Hz timer takes them in and hands the changed
arrays to pyqtgraph, so a burst of a thousand events costs one redraw, a quiet run costs
nothing, and plots on a page not shown are not drawn until it is. A repaint's cost is
mostly the axes (tick labels laid out again whenever a range moves), so ranges move
seldom: the step axis spans the whole run from its start, and the memory axis grows in
steps. Long runs stay cheap: curves clip to the view and downsample.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, Qt, QTimer
from PySide6.QtWidgets import QVBoxLayout, QWidget

from xgblora_app import theme
from xgblora_app.state.series import TrainingSeries

REDRAW_MS = 50  # at most 20 redraws a second
AXIS_PX = 62  # a vertical axis: its label and tick labels of up to six characters ("0.0055")


def _pen(name: str, width: float = 1.0, style=Qt.PenStyle.SolidLine):
    # One pixel wide: Qt draws a wider line as separate segments (pyqtgraph's segmented mode),
    # which took the paint of a frame from 6 to 12 ms (benchmarks/gui_latency.py).
    return pg.mkPen(theme.SERIES[name], width=width, style=style)


def _fit_y(plot: pg.PlotItem, values: np.ndarray, top_room: float = 0.2) -> None:
    """The y range around ``values``, moved only when they leave it or fill less than half
    of it: each move lays the axis out again. The margin (a fifth of the data's span) lets a
    falling loss go a while before the range follows it; ``top_room`` keeps a band above
    the data free (for a legend)."""
    finite = values[np.isfinite(values)] if len(values) else values
    if not len(finite):
        return
    lo, hi = float(finite.min()), float(finite.max())
    bottom, top = plot.vb.viewRange()[1]
    span = hi - lo or abs(hi) or 1.0
    if bottom <= lo and hi <= top and span >= 0.5 * (top - bottom):
        return
    plot.setYRange(lo - 0.2 * span, hi + top_room * span, padding=0)


class IntegerAxis(pg.AxisItem):
    """Ticks at whole numbers only: there is no round 1.5 or layer 0.5."""

    def tickSpacing(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph's names
        levels = [(spacing, offset) for spacing, offset in super().tickSpacing(minVal, maxVal, size) if spacing >= 1]
        return levels or [(1.0, 0.0)]


class TrainingPlots(QWidget):
    def __init__(self, series: TrainingSeries | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series = series or TrainingSeries()
        self.view = pg.GraphicsLayoutWidget()
        self.view.ci.setSpacing(10)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self._build_loss()
        self._build_heat()
        self._build_eval()
        self._build_memory()
        self._build_speed()
        for plot in (self.memory_plot, self.speed_plot, self.lr_plot):
            plot.setXLink(self.loss_plot)  # zooming one step axis zooms them all
        # A linked view lines up with its neighbour above by screen position, and the held-out
        # plot is narrower (its F1 axis at the right): linked, its last steps were cut off. It
        # follows the step range by value instead (a range that did not change emits nothing).
        self.loss_plot.sigXRangeChanged.connect(lambda _, r: self.eval_plot.setXRange(*r, padding=0))
        self.eval_plot.sigXRangeChanged.connect(lambda _, r: self.loss_plot.setXRange(*r, padding=0))
        self.plots = [self.loss_plot, self.heat_plot, self.eval_plot, self.memory_plot, self.speed_plot,
                      self.lr_plot]
        self.redraws = 0
        self._drawn_version = -1
        self._step_span = 0  # the run's steps the step axis was set to (0: follow the data)
        self._memory_top = 0.0
        self.apply_theme()
        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    # --- layout ----------------------------------------------------------------
    def _plot(self, row: int, col: int, title: str, left: str, units: str | None = None,
              bottom: str = "optimizer step", axes: dict[str, pg.AxisItem] | None = None) -> pg.PlotItem:
        plot = self.view.addPlot(row=row, col=col, title=title, axisItems=axes)
        plot.setLabel("left", left, units=units)
        plot.setLabel("bottom", bottom)
        for name in ("left", "bottom") if units is None else ("bottom",):
            plot.getAxis(name).enableAutoSIPrefix(False)  # else its label is re-laid out on every range change
        # A fixed width: sized to its tick labels, an axis whose range moved ("2.5" → "2.25")
        # changed the grid's layout, and all six plots were laid out and painted again.
        plot.getAxis("left").setWidth(AXIS_PX)
        # no grid: translucent grid lines made a full repaint 5x slower (10 → 52 ms for six plots)
        plot.setMenuEnabled(False)
        # y is set in refresh, in steps (``_fit_y``): pyqtgraph's auto-range moves it while a
        # frame is painted, which asks for a second paint of every plot, every frame
        plot.enableAutoRange(y=False)
        return plot

    def _curve(self, plot: pg.PlotItem, pen, name: str | None = None, **kw) -> pg.PlotDataItem:
        curve = plot.plot(pen=pen, name=name, **kw)
        curve.setClipToView(True)
        curve.setDownsampling(auto=True, method="peak")
        return curve

    def _build_loss(self) -> None:
        self.loss_plot = self._plot(0, 0, "Training loss", "loss")
        # in one row along the top, in a band the y range keeps free above the curve
        self.loss_plot.addLegend(offset=(-8, 2), labelTextSize="8pt", colCount=3)
        self.raw = self._curve(self.loss_plot, _pen("raw"), "raw")
        self.smooth = self._curve(self.loss_plot, _pen("smooth"), "smoothed")
        self.merges = pg.ScatterPlotItem(symbol="t", size=9, pen=pg.mkPen(None),
                                         brush=pg.mkBrush(*theme.SERIES["merge"]), name="merge")
        self.loss_plot.addItem(self.merges)  # named: the legend picks it up

    def _build_heat(self) -> None:
        self.heat_plot = self._plot(0, 1, "Layers boosted per round", "layer", bottom="round",
                                    axes={"bottom": IntegerAxis("bottom"), "left": IntegerAxis("left")})
        self.heat_image = pg.ImageItem(axisOrder="row-major")
        self.heat_plot.addItem(self.heat_image)
        self.heat_plot.invertY(False)

    def _build_eval(self) -> None:
        self.eval_plot = self._plot(1, 0, "Held-out loss", "loss")
        self.eval = self._curve(self.eval_plot, _pen("eval"), symbol="o", symbolSize=6,
                                symbolBrush=theme.SERIES["eval"], symbolPen=None)
        # The sample answers' token F1, on its own 0–1 axis at the right (pyqtgraph's
        # MultiplePlotAxes pattern: a second view box that follows the plot's geometry).
        self.f1_view = pg.ViewBox(enableMouse=False)
        self.eval_plot.scene().addItem(self.f1_view)
        right = self.eval_plot.getAxis("right")
        right.linkToView(self.f1_view)
        right.setLabel("sample token F1")
        right.enableAutoSIPrefix(False)
        right.setWidth(AXIS_PX)
        self.f1_view.setXLink(self.eval_plot)
        self.f1_view.setYRange(0, 1, padding=0.02)
        self.f1 = pg.PlotDataItem(pen=_pen("f1", style=Qt.PenStyle.DashLine), symbol="s", symbolSize=5,
                                  symbolBrush=theme.SERIES["f1"], symbolPen=None)
        self.f1_view.addItem(self.f1)

        def follow() -> None:
            self.f1_view.setGeometry(self.eval_plot.vb.sceneBoundingRect())
            self.f1_view.linkedViewChanged(self.eval_plot.vb, self.f1_view.XAxis)

        self.eval_plot.vb.sigResized.connect(follow)

    def _build_memory(self) -> None:
        self.memory_plot = self._plot(1, 1, "Memory", "bytes", units="B")
        # y from zero (``_grow_memory_axis``), so the gap to the predicted peak reads true; the
        # legend sits in the room this leaves under the curves
        self.memory_plot.addLegend(offset=(8, -8), labelTextSize="8pt")
        self.rss_curve = self._curve(self.memory_plot, _pen("rss"), "process RSS")
        self.allocated_curve = self._curve(self.memory_plot, _pen("allocated"), connect="finite")
        self._allocated_in_legend = False  # added once a GPU reports it; on CPU it stays out
        self.predicted_line = pg.InfiniteLine(angle=0, movable=False, pen=_pen("predicted", 1.5, Qt.PenStyle.DashLine),
                                              label="predicted peak", labelOpts={"position": 0.12, "anchors": [(0, 1), (0, 1)]})
        self.predicted_line.hide()
        self.memory_plot.addItem(self.predicted_line)

    def _build_speed(self) -> None:
        self.speed_plot = self._plot(2, 0, "Throughput", "tokens/s")
        self.speed = self._curve(self.speed_plot, _pen("speed"))
        self.lr_plot = self._plot(2, 1, "Learning rate", "lr")
        self.lr = self._curve(self.lr_plot, _pen("lr"))

    # --- drawing -----------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """One frame: take in what arrived, and draw what changed if the plots are shown."""
        s = self.series
        s.flush()
        if not force and (s.version == self._drawn_version or not self.isVisible()):
            return
        dirty = set(s.GROUPS) if force else set(s.dirty)
        s.dirty.clear()
        self._drawn_version = s.version
        self.redraws += 1
        self._span_steps(s.total_steps)
        if "loss" in dirty:
            _fit_y(self.loss_plot, s.loss.view(), top_room=0.45)
            self.raw.setData(s.steps.view(), s.loss.view())
            self.smooth.setData(s.steps.view(), s.smooth.view())
            self.merges.setData(s.merge_steps.view(), s.merge_loss.view())
        if "eval" in dirty:
            _fit_y(self.eval_plot, s.eval_loss.view())
            self.eval.setData(s.eval_steps.view(), s.eval_loss.view())
            self.f1.setData(s.sample_steps.view(), s.sample_f1.view())
            self.eval_plot.showAxis("right", len(s.sample_steps) > 0)  # only runs that answer samples
        if "memory" in dirty:
            self.rss_curve.setData(s.mem_steps.view(), s.rss.view())
            allocated = s.allocated.view()
            has_device = bool(np.isfinite(allocated).any()) if len(allocated) else False
            self.allocated_curve.setData(s.mem_steps.view() if has_device else [], allocated if has_device else [])
            if has_device and not self._allocated_in_legend:
                self.memory_plot.legend.addItem(self.allocated_curve, "device allocated")
                self._allocated_in_legend = True
            top = max(float(np.nanmax(s.rss.view())) if len(s.rss) else 0.0,
                      float(np.nanmax(allocated)) if has_device else 0.0, float(s.predicted_peak or 0))
            self._grow_memory_axis(top)
            if s.predicted_peak:
                if self.predicted_line.value() != s.predicted_peak:  # its label is re-laid out on every set
                    self.predicted_line.setValue(s.predicted_peak)
                self.predicted_line.show()
            else:
                self.predicted_line.hide()
        if "speed" in dirty:
            _fit_y(self.speed_plot, s.tokens_per_s.view())
            _fit_y(self.lr_plot, s.lr.view())
            self.speed.setData(s.speed_steps.view(), s.tokens_per_s.view())
            self.lr.setData(s.speed_steps.view(), s.lr.view())
        if "heat" in dirty:
            self._draw_heat()

    def _span_steps(self, total: int) -> None:
        """The step axis spans the whole run, set once: a range that moved every frame
        would lay out the tick labels of all six (linked) plots again every frame."""
        if total == self._step_span:
            return
        self._step_span = total
        if total:
            self.loss_plot.setXRange(0, total, padding=0.01)
        else:
            self.loss_plot.enableAutoRange(x=True)

    def _grow_memory_axis(self, top: float) -> None:
        """From zero (so the gap to the predicted peak reads true) to 30 % above the top,
        room for the label; moved only when that room falls under 20 % or the data shrinks
        well inside it."""
        if top and self._memory_top and top * 1.2 <= self._memory_top < top * 2:
            return
        self._memory_top = top * 1.3 if top else 1.0
        self.memory_plot.setYRange(0, self._memory_top, padding=0)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.refresh()  # what arrived while the page was hidden

    def _draw_heat(self) -> None:
        heat = self.series.heat.T  # rows: layers, columns: rounds
        self.heat_image.setImage(heat, levels=(0.0, 1.0), autoLevels=False)
        rounds, layers = self.series.heat.shape
        # pixel (round r, layer l) is centred on (r, l): rounds count from 1, layers from 0
        self.heat_image.setRect(QRectF(0.5, -0.5, rounds, layers))
        self.heat_plot.setLimits(xMin=0.5, xMax=rounds + 0.5, yMin=-0.5, yMax=layers - 0.5)
        self.heat_plot.setRange(xRange=(0.5, rounds + 0.5), yRange=(-0.5, layers - 0.5), padding=0)

    def reset(self) -> None:
        self.series.clear()
        self.refresh(force=True)

    @property
    def rounds(self) -> list[list[int]]:
        return self.series.rounds

    # --- theme -------------------------------------------------------------------
    def apply_theme(self) -> None:
        background, foreground = theme.plot_background(), theme.plot_foreground()
        self.view.setBackground(background)
        for plot in self.plots:
            plot.titleLabel.setAttr("color", foreground)
            plot.titleLabel.setText(plot.titleLabel.text)
            for name in ("left", "bottom", "right"):
                axis = plot.getAxis(name)
                axis.setPen(foreground)
                axis.setTextPen(foreground)
        for legend in (self.loss_plot.legend, self.memory_plot.legend):
            legend.setLabelTextColor(foreground)
            for _, label in legend.items:  # existing labels keep their colour otherwise
                label.setText(label.text, color=foreground)
        self.predicted_line.label.setColor(foreground)
        empty, boosted = theme.heat_colors()
        ends = np.array([[c.red(), c.green(), c.blue()] for c in (empty, boosted)], dtype=float)
        # empty, the round in progress (half way: series.IN_PROGRESS), merged
        lut = np.array([ends[0], ends.mean(axis=0), ends[1]]).round().astype(np.ubyte)
        self.heat_image.setLookupTable(lut)
        self.refresh(force=True)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.PaletteChange:
            self.apply_theme()
        super().changeEvent(event)
