"""Try it: one prompt, answered by the base model and by a fine-tuned run, side by side."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from xgblora_app.context import Studio
from xgblora_app.widgets import RunPicker, section_title
from xgblora_engine import protocol as P
from xgblora_engine.runs import summarize


class AnswerPane(QGroupBox):
    def __init__(self, title: str) -> None:
        super().__init__(title)
        v = QVBoxLayout(self)
        self.text = QTextBrowser()
        self.meta = QLabel("")
        v.addWidget(self.text, 1)
        v.addWidget(self.meta)

    def waiting(self) -> None:
        self.text.setHtml("<i>generating…</i>")
        self.meta.setText("")

    def answer(self, e: P.GenerationResult) -> None:
        self.text.setPlainText(e.text)
        end = "stopped at its end-of-turn token" if e.stopped else "hit the length limit"
        self.meta.setText(f"{e.tokens} tokens in {e.seconds:.1f} s · {end}")

    def failed(self, e: P.Error) -> None:
        self.text.setHtml(f"<b>{html.escape(e.message)}</b><br>{html.escape(e.hint)}")
        self.meta.setText("")


class ChatPanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.pending: dict[int, AnswerPane] = {}
        self._build()
        self.run.refresh()
        studio.bridge.generation_result.connect(self._on_result)
        studio.bridge.error.connect(self._on_error)
        studio.bridge.worker_exited.connect(lambda _: self._finish_all())

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(section_title("Try it: base model and fine-tuned run, side by side"))
        row = QHBoxLayout()
        self.run = RunPicker(self.studio.session)
        self.run.picked.connect(self._run_changed)
        self.max_tokens = QSpinBox(minimum=1, maximum=4096, value=128)
        self.system = QLineEdit()
        self.system.setPlaceholderText("optional system prompt")
        for w in (QLabel("Fine-tuned run"), self.run, QLabel("max new tokens"), self.max_tokens):
            row.addWidget(w)
        row.addWidget(self.system, 1)
        layout.addLayout(row)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Ask something the fine-tuning data covers…  (Ctrl+Return to generate)")
        self.prompt.setMaximumHeight(90)
        layout.addWidget(self.prompt)
        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Generate with both")
        self.generate_button.clicked.connect(self.generate)
        buttons.addWidget(self.generate_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.prompt.installEventFilter(self)
        panes = QHBoxLayout()
        self.base_pane, self.tuned_pane = AnswerPane("Base model"), AnswerPane("Fine-tuned")
        panes.addWidget(self.base_pane)
        panes.addWidget(self.tuned_pane)
        layout.addLayout(panes, 1)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        """Ctrl+Return in the prompt generates; taken before the window's Start shortcut sees it."""
        if obj is self.prompt and event.type() in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            ctrl = event.modifiers() & Qt.KeyboardModifier.ControlModifier
            if ctrl and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                event.accept()
                if event.type() == QEvent.Type.KeyPress:
                    self.generate()
                return True
        return super().eventFilter(obj, event)

    def select_run(self, run_dir: str) -> None:
        self.run.select(run_dir)

    def _run_changed(self, run_dir: str) -> None:
        self.tuned_pane.setTitle(f"Fine-tuned: {Path(run_dir).name}" if run_dir else "Fine-tuned (no run yet)")
        self.base_pane.setTitle(f"Base model: {self.base_model()}")

    def base_model(self) -> str:
        """The run's own base model, so the comparison is fair; else the current setting."""
        run_dir = self.run.run_dir()
        if run_dir:
            model = summarize(Path(run_dir)).model
            if model:
                return model
        return self.studio.settings.get("model", "name")

    def generate(self) -> None:
        prompt = self.prompt.toPlainText().strip()
        if not prompt or self.pending:
            return
        system = self.system.text().strip() or None
        model, run_dir = self.base_model(), self.run.run_dir()
        panes = [(None, self.base_pane)] + ([(run_dir, self.tuned_pane)] if run_dir else [])
        for rd, pane in panes:
            pane.waiting()
            job = P.Generate(model=model, prompt=prompt, max_new_tokens=self.max_tokens.value(), run_dir=rd,
                             system=system)
            self.pending[self.studio.bridge.submit(job)] = pane
        self.generate_button.setEnabled(False)

    def _on_result(self, e: P.GenerationResult) -> None:
        pane = self.pending.pop(e.job_id, None)
        if pane is not None:
            pane.answer(e)
            self._maybe_done()

    def _on_error(self, e: P.Error) -> None:
        pane = self.pending.pop(e.job_id, None)
        if pane is not None:
            pane.failed(e)
            self._maybe_done()

    def _maybe_done(self) -> None:
        self.generate_button.setEnabled(not self.pending)

    def _finish_all(self) -> None:
        for pane in self.pending.values():
            pane.text.setHtml("<b>The engine process stopped before answering.</b>")
        self.pending.clear()
        self._maybe_done()
