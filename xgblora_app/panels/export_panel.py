"""Export: a run to one or more formats, with progress, each format's verification
result, a button to open its folder and the command that runs it."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from xgblora_app.context import Studio
from xgblora_app.widgets import Banner, RunPicker, section_title
from xgblora_engine import protocol as P
from xgblora_engine.payloads import GGUF_TYPES
from xgblora_engine.rundir import RunDir, ollama_name, past_exports

FORMATS = {"hf": "Hugging Face (merged safetensors)", "peft": "PEFT LoRA adapter",
           "gguf": "GGUF (llama.cpp)", "ollama": "Ollama (GGUF + Modelfile)"}


class FormatRow:
    """One format's progress, verdict, checks, folder button and command."""

    def __init__(self, grid: QGridLayout, row: int, fmt: str) -> None:
        self.fmt = fmt
        self.name = QLabel(f"<b>{fmt}</b>")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.stage = QLabel("waiting")
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.open_button = QPushButton("Open folder")
        self.open_button.setEnabled(False)
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.command.text()))
        self.path = ""
        self.open_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(self.path)))
        grid.addWidget(self.name, row, 0)
        grid.addWidget(self.progress, row, 1)
        grid.addWidget(self.stage, row, 2)
        grid.addWidget(self.open_button, row, 3)
        grid.addWidget(self.result, row + 1, 1, 1, 3)
        grid.addWidget(self.command, row + 2, 1, 1, 2)
        grid.addWidget(self.copy_button, row + 2, 3)

    def progress_to(self, stage: str, fraction: float) -> None:
        self.stage.setText(stage)
        self.progress.setValue(int(fraction * 100))

    def done(self, e: P.ExportDone) -> None:
        self.path = e.path
        self.progress.setValue(100)
        self.stage.setText(("pushed" if self.fmt == "hub" else "verified") if e.ok else "FAILED")
        checks = " · ".join(f"{'✓' if c.ok else ('–' if c.skipped else '✗')} {html.escape(c.name)}"
                            + (f": {html.escape(c.detail)}" if c.detail else "") for c in e.checks)
        colour = "rgb(0,158,115)" if e.ok else "rgb(213,60,0)"
        first = html.escape(e.message.splitlines()[0]) if e.message else ""
        self.result.setText(f"<span style='color:{colour}'><b>{'OK' if e.ok else 'Failed'}</b></span> "
                            f"{html.escape(e.path)}<br>{first}<br><small>{checks}</small>")
        self.open_button.setEnabled(Path(e.path).exists())
        if e.ok:
            self.command.setText(e.command)  # the engine's, run as printed in its tests
            self.copy_button.setEnabled(True)


class ExportPanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.export_ids: set[int] = set()
        self.rows: dict[str, FormatRow] = {}
        self._build()
        self.run.refresh()
        studio.bridge.export_progress.connect(self._on_progress)
        studio.bridge.export_done.connect(self._on_done)
        studio.bridge.error.connect(self._on_error)
        studio.bridge.state_changed.connect(self._on_state)
        studio.bridge.worker_exited.connect(lambda _: self.export_button.setEnabled(True))

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(section_title("Export a run"))
        box = QGroupBox("What and where")
        form = QFormLayout(box)
        self.run = RunPicker(self.studio.session)
        self.run.picked.connect(self._suggest_out)
        form.addRow("Run", self.run)
        formats = QHBoxLayout()
        self.format_boxes = {}
        for fmt, label in FORMATS.items():
            check = QCheckBox(label)
            check.setChecked(fmt == "hf")
            formats.addWidget(check)
            self.format_boxes[fmt] = check
        formats.addStretch(1)
        form.addRow("Formats", formats)
        self.dtype = QComboBox()
        self.dtype.addItems(["auto", "fp32", "bf16", "fp16"])
        self.dtype.setToolTip("dtype of the merged weights (auto: the base model's)")
        self.quant = QComboBox()
        self.quant.addItems(GGUF_TYPES)
        self.quant.setToolTip("GGUF tensor type for gguf/ollama: f16 is exact to 3 digits; q8_0 is half its size, "
                              "q5_* and q4_* about a third and a quarter, and drift further from the fine-tuned "
                              "model's answers (docs/export.md has the measured drift). The K-types (q6_K, "
                              "q5_K_M, q4_K_M) drift least for their size; llama.cpp's own quantizer makes them, "
                              "which needs llama-cpp-python (pip install 'xgblora-studio[gguf-runtime]')")
        self.verify = QCheckBox("Verify each export in its runtime (reload and compare outputs)")
        self.verify.setChecked(True)
        options = QHBoxLayout()
        for w in (QLabel("dtype"), self.dtype, QLabel("GGUF type"), self.quant, self.verify):
            options.addWidget(w)
        options.addStretch(1)
        form.addRow("Options", options)
        self.out = QLineEdit()
        self.out.setToolTip("each export makes a new folder in here, named FORMAT-N (hf-1, gguf-q8_0-2, …): "
                            "exporting again never overwrites or refuses")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out = QHBoxLayout()
        out.addWidget(self.out, 1)
        out.addWidget(browse)
        form.addRow("Export into", out)
        self.ollama_name = QLineEdit()
        self.ollama_name.setToolTip("the name `ollama create` gives the model (default: the run's name)")
        form.addRow("Ollama name", self.ollama_name)
        self.format_boxes["ollama"].toggled.connect(self.ollama_name.setEnabled)
        self.ollama_name.setEnabled(False)
        self.push_to = QLineEdit(placeholderText="OWNER/NAME: leave empty to keep the export on this machine")
        self.push_to.setToolTip("after verifying, upload the exports to this Hugging Face Hub repository, model "
                                "card included (needs `hf auth login` or HF_TOKEN)")
        self.public = QCheckBox("public")
        self.public.setToolTip("new repositories are private unless this is ticked")
        push = QHBoxLayout()
        push.addWidget(self.push_to, 1)
        push.addWidget(self.public)
        form.addRow("Push to the Hub", push)
        layout.addWidget(box)
        row = QHBoxLayout()
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)
        row.addWidget(self.export_button)
        row.addStretch(1)
        layout.addLayout(row)
        self.banner = Banner()
        layout.addWidget(self.banner)
        self.results_box = QGroupBox("Results")
        self.grid = QGridLayout(self.results_box)
        self.grid.setColumnStretch(1, 1)
        self.results_box.hide()
        layout.addWidget(self.results_box)
        self.past_box = QGroupBox("Earlier exports of this run")
        self.past = QLabel()
        self.past.setWordWrap(True)
        self.past.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        QVBoxLayout(self.past_box).addWidget(self.past)
        layout.addWidget(self.past_box)
        layout.addStretch(1)

    # --- choosing -----------------------------------------------------------------
    def select_run(self, run_dir: str) -> None:
        self.run.select(run_dir)

    def _suggest_out(self, run_dir: str) -> None:
        if run_dir and (not self.out.text() or self.out.property("suggested")):
            self.out.setText(str(RunDir(run_dir).exports_path))
            self.out.setProperty("suggested", True)
        self.ollama_name.setPlaceholderText(ollama_name(Path(run_dir).name) if run_dir else "")
        self._show_past(run_dir)

    def _show_past(self, run_dir: str) -> None:
        """Every earlier export of the run: its folder and whether it was verified."""
        records = past_exports(run_dir) if run_dir else []
        lines = [f"<span style='color:{'rgb(0,158,115)' if e.ok else 'rgb(213,60,0)'}'>"
                 f"{'✓' if e.ok else '✗'}</span> <b>{html.escape(e.format)}</b> {html.escape(e.path)}"
                 f" <small>{html.escape(e.message.splitlines()[0] if e.message else '')}</small>"
                 for e in reversed(records)]
        self.past.setText("<br>".join(lines) or "none yet")

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export into", self.out.text())
        if path:
            self.out.setText(path)
            self.out.setProperty("suggested", False)

    def formats(self) -> list[str]:
        return [f for f, box in self.format_boxes.items() if box.isChecked()]

    # --- exporting ----------------------------------------------------------------
    def export(self) -> None:
        run_dir, formats, out = self.run.run_dir(), self.formats(), self.out.text().strip()
        problem = ("Pick a run that has trained at least one step." if not run_dir else
                   "Choose at least one format." if not formats else
                   "Choose a folder to export into." if not out else "")
        if problem:
            self.banner.show_message("warning", problem)
            return
        push_to = self.push_to.text().strip() or None
        self.banner.clear()
        self._reset_rows(formats + (["hub"] if push_to else []))
        self.export_button.setEnabled(False)
        self.export_ids.add(self.studio.bridge.submit(P.Export(
            run_dir=run_dir, into=out, formats=formats, dtype=self.dtype.currentText(),
            quant=self.quant.currentText() if {"gguf", "ollama"} & set(formats) else None,
            verify=self.verify.isChecked(), ollama_name=self.ollama_name.text().strip() or None,
            push_to=push_to, public=self.public.isChecked())))

    def _reset_rows(self, formats: list[str]) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.rows = {fmt: FormatRow(self.grid, i * 3, fmt) for i, fmt in enumerate(formats)}
        self.results_box.show()

    def _on_progress(self, e: P.ExportProgress) -> None:
        if e.job_id in self.export_ids and e.format in self.rows:
            self.rows[e.format].progress_to(e.stage, e.fraction)

    def _on_done(self, e: P.ExportDone) -> None:
        if e.job_id in self.export_ids and e.format in self.rows:
            self.rows[e.format].done(e)

    def _on_error(self, e: P.Error) -> None:
        if e.job_id in self.export_ids:
            self.banner.show_message("error", e.message, e.hint)
            self.export_button.setEnabled(True)

    def _on_state(self, e: P.StateChanged) -> None:
        if e.state == "idle" and e.job_id in self.export_ids:
            self.export_button.setEnabled(True)
            self._show_past(self.run.run_dir())
