"""Data: the training file, its detected format and column mapping, a preview of what the
model will see, token lengths and truncation, and the eval split.

Two readings: an instant local one (the engine's light readers, in a background
thread: format, columns, rows) and the engine's (Inspect: the tokenizer's view — token
lengths, truncation, the chat template applied). A bad file is explained in the panel.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from xgblora_app import theme
from xgblora_app.context import Studio
from xgblora_app.state.run_settings import help_text
from xgblora_app.widgets import Banner, run_in_background, section_title
from xgblora_engine import config as C
from xgblora_engine import protocol as P
from xgblora_engine.errors import UserError
from xgblora_engine.payloads import DataReport, PreviewExample

FILE_FILTER = "Data files (*.jsonl *.json *.csv *.parquet *.txt);;All files (*)"
AUTO = "(detect)"


def read_locally(path: str, fmt: str, columns: dict[str, str]) -> dict:
    """Format, columns and the first conversations; runs in a background thread. The rows
    are counted one at a time (and checked as they are read), never held whole."""
    from xgblora_engine.data.formats import OPTIONAL, REQUIRED, detect_format, to_conversation
    from xgblora_engine.data.readers import DETECT_ROWS, iter_rows, read_rows

    head = read_rows(path, limit=DETECT_ROWS)
    report = detect_format(head, fmt, columns)
    conversations = [to_conversation(r, report, i) for i, r in enumerate(head[:3], 1)]
    n_rows = len(head) if len(head) < DETECT_ROWS else sum(1 for _ in iter_rows(path))
    return {"format": report.format, "columns": report.columns, "all_columns": report.all_columns,
            "n_rows": n_rows, "fields": list(REQUIRED[report.format] + OPTIONAL[report.format]),
            "conversations": conversations}


def is_hub_id(path: str) -> bool:
    from xgblora_engine.data.readers import SAMPLE, looks_like_hub_id

    return not path.startswith(SAMPLE) and not Path(path).expanduser().exists() and looks_like_hub_id(path)


class DataPanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.inspect_ids: set[int] = set()
        self.local: dict | None = None
        self._check_serial = 0
        self._build()
        self._show_path(studio.settings.get("data", "path"))
        self.recheck = QTimer(self, singleShot=True, interval=250)  # typing does not start a read per key
        self.recheck.timeout.connect(self.check)
        studio.settings.subscribe("changed", self._on_setting)
        studio.bridge.inspect_result.connect(self._on_inspect)
        studio.bridge.error.connect(self._on_error)

    # --- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(section_title("Training data"))
        self.banner = Banner()
        layout.addWidget(self.banner)
        top = QHBoxLayout()
        top.addWidget(self._source_box(), 3)
        top.addWidget(self._options_box(), 2)
        layout.addLayout(top)
        split = QSplitter()
        split.addWidget(self._stats_box())
        split.addWidget(self._preview_box())
        split.setStretchFactor(1, 1)
        layout.addWidget(split, 1)

    def _source_box(self) -> QGroupBox:
        from xgblora_engine.data.sample import sample_names

        box = QGroupBox("Source")
        grid = QGridLayout(box)
        self.source = QButtonGroup(self)
        self.radios = {k: QRadioButton(t) for k, t in (("sample", "Bundled sample"), ("file", "Local file"),
                                                       ("hub", "Hub dataset"))}
        for i, radio in enumerate(self.radios.values()):
            self.source.addButton(radio, i)
            grid.addWidget(radio, i, 0)
        self.sample = QComboBox()
        self.sample.addItems(sample_names())
        grid.addWidget(self.sample, 0, 1)
        self.file_path = QLineEdit()
        self.file_path.setPlaceholderText(".jsonl, .json, .csv, .parquet or .txt")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.file_path, 1)
        row.addWidget(browse)
        grid.addLayout(row, 1, 1)
        self.hub_id = QLineEdit()
        self.hub_id.setPlaceholderText("owner/name[:split][@config] (needs the network unless cached)")
        grid.addWidget(self.hub_id, 2, 1)
        grid.setColumnStretch(1, 1)
        self.source.idClicked.connect(lambda _: self._path_changed())
        self.sample.activated.connect(lambda _: self._path_changed())
        self.file_path.editingFinished.connect(self._path_changed)
        self.hub_id.editingFinished.connect(self._path_changed)
        self.format = QComboBox()
        self.format.addItems(C.FORMATS)
        self.format.setToolTip(help_text("data", "format"))
        self.format.setCurrentText(self.studio.settings.get("data", "format"))
        self.format.currentTextChanged.connect(lambda v: self.studio.settings.set("data", "format", v))
        grid.addWidget(QLabel("Format"), 3, 0)
        grid.addWidget(self.format, 3, 1)
        self.detected = QLabel("")
        self.detected.setWordWrap(True)
        grid.addWidget(self.detected, 4, 0, 1, 2)
        self.mapping = QTableWidget(0, 2)
        self.mapping.setHorizontalHeaderLabels(["Field", "Column in the data"])
        self.mapping.horizontalHeader().setStretchLastSection(True)
        self.mapping.verticalHeader().hide()
        self.mapping.setToolTip(help_text("data", "columns"))
        self.mapping.setMaximumHeight(150)
        grid.addWidget(self.mapping, 5, 0, 1, 2)
        return box

    def _options_box(self) -> QGroupBox:
        box = QGroupBox("Split and length")
        form = QFormLayout(box)
        s = self.studio.settings
        self.eval_fraction = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=0.9, singleStep=0.05)
        self.eval_fraction.setValue(s.get("data", "eval_fraction"))
        self.eval_fraction.valueChanged.connect(lambda v: s.set("data", "eval_fraction", v))
        self.max_eval = QSpinBox(minimum=0, maximum=100_000)
        self.max_eval.setValue(s.get("data", "max_eval_examples"))
        self.max_eval.valueChanged.connect(lambda v: s.set("data", "max_eval_examples", v))
        self.eval_path = QLineEdit(s.get("data", "eval_path") or "")
        self.eval_path.setPlaceholderText("none: hold out a fraction")
        self.eval_path.editingFinished.connect(
            lambda: s.set("data", "eval_path", self.eval_path.text().strip() or None))
        self.seq_len = QSpinBox(minimum=8, maximum=131072, singleStep=64)
        self.seq_len.setValue(s.get("data", "seq_len"))
        self.seq_len.valueChanged.connect(lambda v: s.set("data", "seq_len", v))
        self.train_on = QComboBox()
        self.train_on.addItems(C.TRAIN_ON)
        self.train_on.setCurrentText(s.get("data", "train_on"))
        self.train_on.currentTextChanged.connect(lambda v: s.set("data", "train_on", v))
        for key, w, label in (("eval_fraction", self.eval_fraction, "Held-out fraction"),
                              ("max_eval_examples", self.max_eval, "Held-out cap"),
                              ("eval_path", self.eval_path, "Eval file"), ("seq_len", self.seq_len, "Sequence length"),
                              ("train_on", self.train_on, "Loss on")):
            w.setToolTip(help_text("data", key))
            form.addRow(label, w)
        return box

    def _stats_box(self) -> QGroupBox:
        box = QGroupBox("Counts and token lengths")
        v = QVBoxLayout(box)
        self.counts = QLabel("Pick a dataset.")
        self.counts.setWordWrap(True)
        v.addWidget(self.counts)
        self.histogram = pg.PlotWidget()
        self.histogram.setMenuEnabled(False)
        self.histogram.setLabel("bottom", "tokens per example")
        self.histogram.setLabel("left", "examples")
        self.histogram.setBackground(theme.plot_background())
        self.bars = pg.BarGraphItem(x=[], height=[], width=1.0, brush=pg.mkBrush(*theme.SERIES["smooth"]))
        self.histogram.addItem(self.bars)
        self.limit_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(theme.SERIES["eval"], width=2),
                                          label="seq len", labelOpts={"position": 0.9})
        self.histogram.addItem(self.limit_line)
        self.histogram.setMinimumHeight(160)
        v.addWidget(self.histogram, 1)
        return box

    def _preview_box(self) -> QGroupBox:
        box = QGroupBox("Preview: what the model sees (highlighted: the tokens it learns to produce)")
        v = QVBoxLayout(box)
        self.preview = QTextBrowser()
        v.addWidget(self.preview)
        self.preview_note = QLabel("")
        self.preview_note.setWordWrap(True)
        v.addWidget(self.preview_note)
        return box

    # --- choosing ---------------------------------------------------------------------
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training data", self.studio.prefs.value("dirs/data", ""),
                                              FILE_FILTER)
        if path:
            self.studio.prefs.setValue("dirs/data", str(Path(path).parent))
            self.file_path.setText(path)
            self.radios["file"].setChecked(True)
            self._path_changed()

    def chosen_path(self) -> str:
        key = list(self.radios)[max(0, self.source.checkedId())]
        if key == "sample":
            name = self.sample.currentText()
            return "sample" if name == "python-topics" else f"sample:{name}"
        return (self.file_path if key == "file" else self.hub_id).text().strip()

    def _path_changed(self) -> None:
        path = self.chosen_path()
        if path and path != self.studio.settings.get("data", "path"):
            self.studio.settings.set("data", "path", path)

    def _show_path(self, path: str) -> None:
        if path == "sample" or path.startswith("sample:"):
            self.radios["sample"].setChecked(True)
            self.sample.setCurrentText(path.partition(":")[2] or "python-topics")
        elif is_hub_id(path):
            self.radios["hub"].setChecked(True)
            self.hub_id.setText(path)
        else:
            self.radios["file"].setChecked(True)
            self.file_path.setText(path)

    def _on_setting(self, section: str, key: str, value) -> None:
        if section == "data" and key in ("path", "format", "columns", "eval_path"):
            if key == "path" and value != self.chosen_path():
                self._show_path(value)
            self.recheck.start()
        elif section == "data" and key in ("seq_len", "train_on", "eval_fraction", "max_eval_examples"):
            if key == "seq_len" and self.seq_len.value() != value:
                self.seq_len.setValue(value)
            self.limit_line.setValue(self.studio.settings.get("data", "seq_len"))
            self.recheck.start()
        elif section == "model" and key == "name":
            self.recheck.start()  # token counts depend on the tokenizer

    # --- reading -------------------------------------------------------------------
    def check(self) -> None:
        """Read the data locally, then ask the engine for the tokenizer's view."""
        d = self.studio.settings.cfg.data
        self.banner.clear()
        self._check_serial += 1
        serial = self._check_serial
        if is_hub_id(d.path):
            self.detected.setText(f"Hub dataset {d.path}: the engine reads it…")
            self._inspect()
            return
        self.detected.setText("Reading…")
        run_in_background(lambda: read_locally(d.path, d.format, dict(d.columns)),
                          lambda result: self._read_done(serial, result),
                          lambda exc: self._read_failed(serial, exc), self)

    def _read_done(self, serial: int, result: dict) -> None:
        if serial != self._check_serial:
            return  # a newer check is under way
        self.local = result
        shown = ", ".join(f"{f} = '{c}'" for f, c in result["columns"].items())
        self.detected.setText(f"{result['n_rows']} rows in <b>{result['format']}</b> format ({shown})")
        self._fill_mapping(result)
        report = self.studio.session.data_report
        if not (report and report.preview):
            self._show_conversations(result["conversations"])
        self._inspect()

    def _read_failed(self, serial: int, exc: Exception) -> None:
        if serial != self._check_serial:
            return
        self.local = None
        self.detected.setText("")
        self.mapping.setRowCount(0)
        self.preview.clear()
        self.counts.setText("No usable data.")
        self.bars.setOpts(x=[], height=[])
        if isinstance(exc, UserError):
            self.banner.show_message("error", exc.message, exc.hint)
        else:
            self.banner.show_message("error", f"could not read {self.studio.settings.get('data', 'path')}: {exc}",
                                     "check that the file is a readable .jsonl, .json, .csv, .parquet or .txt")

    def _inspect(self) -> None:
        bridge = self.studio.bridge
        bridge.drop_queued(lambda c: isinstance(c, P.Inspect) and c.data is not None)
        self.counts.setText("Counting tokens in the engine…" if bridge.ready else
                            "Token counts come when the engine is ready.")
        cfg = self.studio.settings.copy()
        self.inspect_ids.add(bridge.submit(P.Inspect(data=cfg.data.path, config=cfg)))

    def _on_inspect(self, event: P.InspectResult) -> None:
        if event.job_id in self.inspect_ids and event.data_report is not None:
            self.studio.session.set_data_report(event.data_report)
            self.show_report(event.data_report)

    def _on_error(self, event: P.Error) -> None:
        if event.job_id in self.inspect_ids:
            self.counts.setText("The engine could not read the data.")
            self.banner.show_message("error", event.message, event.hint)

    # --- showing -------------------------------------------------------------------
    def _fill_mapping(self, result: dict) -> None:
        chosen = self.studio.settings.get("data", "columns")
        self.mapping.setRowCount(len(result["fields"]))
        for row, field in enumerate(result["fields"]):
            self.mapping.setCellWidget(row, 0, QLabel(f"  {field}"))
            combo = QComboBox()
            combo.addItems([AUTO, *result["all_columns"]])
            combo.setCurrentText(chosen.get(field) or result["columns"].get(field) or AUTO)
            combo.currentTextChanged.connect(lambda column, f=field: self._map(f, column))
            self.mapping.setCellWidget(row, 1, combo)

    def _map(self, field: str, column: str) -> None:
        columns = dict(self.studio.settings.get("data", "columns"))
        if column == AUTO:
            columns.pop(field, None)
        else:
            columns[field] = column
        self.studio.settings.set("data", "columns", columns)

    def show_report(self, r: DataReport) -> None:
        share = r.truncated / max(1, r.n_train)
        dropped = r.dropped + r.eval_dropped
        text = (f"<b>{r.n_train}</b> training and <b>{r.n_eval}</b> held-out examples "
                f"({html.escape(r.eval_source)}).<br>Tokens per example: mean {r.token_mean:.0f}, "
                f"p95 {r.token_p95}, max {r.token_max}.<br>")
        if r.truncated:
            text += (f"<span style='color:rgb{theme.SERIES['eval']}'><b>{r.truncated}</b> ({share:.0%}) longer "
                     f"than {r.seq_len} tokens are truncated</span>")
        else:
            text += f"None longer than {r.seq_len} tokens."
        if dropped:
            text += f"<br>{dropped} dropped: their response alone is longer than the sequence length."
        if r.fallback_template:
            text += "<br>The tokenizer has no chat template: a plain ### Instruction / ### Response one is used."
        self.counts.setText(text)
        self._histogram(r.lengths, r.seq_len)
        if r.preview:
            self._show_rendered(r.preview)

    def _histogram(self, lengths: list[int], seq_len: int) -> None:
        self.limit_line.setValue(seq_len)
        if not lengths:
            self.bars.setOpts(x=[], height=[])
            return
        counts, edges = np.histogram(lengths, bins=min(40, max(5, len(set(lengths)))))
        self.bars.setOpts(x=(edges[:-1] + edges[1:]) / 2, height=counts, width=float(edges[1] - edges[0]) * 0.9)

    def _show_rendered(self, preview: list[PreviewExample]) -> None:
        """Examples exactly as the engine trains them, the learned tokens highlighted."""
        parts = []
        for example in preview:
            text, pos, out = example.text, 0, []
            for start, end in sorted(example.spans):
                out.append(html.escape(text[pos:start]))
                out.append(f"<span style='background:{theme.tint(theme.SERIES['raw'], 90)}'>"
                           f"{html.escape(text[start:end])}</span>")
                pos = end
            out.append(html.escape(text[pos:]))
            if example.truncated:  # the engine cuts the oldest turns and the prompt's start, never the end
                out.insert(0, f"<i style='color:rgb{theme.SERIES['eval']}'>[cut above to fit the sequence length] </i>")
            parts.append(f"<pre style='white-space:pre-wrap'>{''.join(out)}</pre>")
        self.preview.setHtml("<hr>".join(parts))
        self.preview_note.setText("Rendered with the model's chat template from the tokens the engine trains on.")

    def _show_conversations(self, conversations: list) -> None:
        """Before the engine has answered: the rows as conversations, replies highlighted."""
        parts = []
        for conv in conversations:
            if isinstance(conv, str):
                parts.append(f"<pre style='white-space:pre-wrap'>{html.escape(conv)}</pre>")
                continue
            lines = []
            for turn in conv:
                body = html.escape(turn["content"])
                if turn["role"] == "assistant":
                    body = f"<span style='background:{theme.tint(theme.SERIES['raw'], 90)}'>{body}</span>"
                lines.append(f"<b>{turn['role']}</b>: {body}")
            parts.append("<p style='white-space:pre-wrap'>" + "<br>".join(lines) + "</p>")
        self.preview.setHtml("<hr>".join(parts))
        self.preview_note.setText("Conversations as read from the file; the chat template is applied once the "
                                  "engine has read the tokenizer.")
