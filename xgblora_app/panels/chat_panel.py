"""Try it: a conversation with the fine-tuned run, and the same conversation with its base
model beside it. Each keeps its own history (rendered with the model's chat template by
the engine); answers stream in as they are generated; Stop ends them."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
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


class ChatPane(QGroupBox):
    """One model's side of the conversation: its turns, and the answer being generated."""

    def __init__(self, title: str) -> None:
        super().__init__(title)
        v = QVBoxLayout(self)
        self.view = QTextBrowser()
        self.meta = QLabel("")
        v.addWidget(self.view, 1)
        v.addWidget(self.meta)
        self.turns: list[P.ChatTurn] = []
        self.asked = ""  # the user turn being answered
        self.live: str | None = None  # the answer so far; None when nothing is being generated

    def ask(self, prompt: str) -> None:
        self.asked, self.live = prompt, ""
        self.meta.setText("generating…")
        self._render()

    def add(self, text: str) -> None:
        if self.live is not None:
            self.live += text
            self._render()

    def answered(self, e: P.GenerationResult) -> None:
        self.turns += [P.ChatTurn(role="user", content=self.asked), P.ChatTurn(role="assistant", content=e.text)]
        self.live = None
        end = ("stopped by you" if e.interrupted else "end of turn" if e.stopped else "hit the length limit")
        first = f", first token after {e.first_token_s:.2f} s" if e.first_token_s is not None else ""
        self.meta.setText(f"{e.tokens} tokens in {e.seconds:.1f} s{first} · {end}")
        self._render()

    def failed(self, message: str, hint: str = "") -> None:
        self.live = None
        self.meta.setText("")
        self._render(f"<p><b>{html.escape(message)}</b><br>{html.escape(hint)}</p>")

    def clear(self) -> None:
        self.turns, self.live, self.asked = [], None, ""
        self.meta.setText("")
        self._render()

    def _render(self, extra: str = "") -> None:
        parts = [_turn(t.role, t.content) for t in self.turns]
        if self.live is not None:
            parts += [_turn("user", self.asked), _turn("assistant", self.live + " ▍")]
        self.view.setHtml("".join(parts) + extra)
        bar = self.view.verticalScrollBar()
        bar.setValue(bar.maximum())  # follow the newest text


def _turn(role: str, text: str) -> str:
    who = "You" if role == "user" else "Model"
    return f"<p><b>{who}:</b> {html.escape(text).replace(chr(10), '<br>')}</p>"


class ChatPanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.pending: dict[int, ChatPane] = {}  # job id -> the pane its answer goes to
        self._build()
        self.run.refresh()
        b = studio.bridge
        b.generation_chunk.connect(self._on_chunk)
        b.generation_result.connect(self._on_result)
        b.error.connect(self._on_error)
        b.worker_exited.connect(lambda _: self._finish_all())

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(section_title("Try it: chat with the fine-tuned run, beside its base model"))
        row = QHBoxLayout()
        self.run = RunPicker(self.studio.session)
        self.run.picked.connect(self._run_changed)
        self.compare = QCheckBox("base model beside it")
        self.compare.setChecked(True)
        self.compare.toggled.connect(lambda on: self.base_pane.setVisible(on))
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Forget the conversation (both sides) and start again")
        self.new_button.clicked.connect(self.new_chat)
        for w in (QLabel("Fine-tuned run"), self.run, self.compare):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(self.new_button)
        layout.addLayout(row)
        layout.addLayout(self._sampling_row())
        panes = QHBoxLayout()
        self.base_pane, self.tuned_pane = ChatPane("Base model"), ChatPane("Fine-tuned")
        panes.addWidget(self.base_pane)
        panes.addWidget(self.tuned_pane)
        layout.addLayout(panes, 1)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Ask something the fine-tuning data covers…  (Ctrl+Return sends)")
        self.prompt.setMaximumHeight(80)
        self.prompt.installEventFilter(self)
        layout.addWidget(self.prompt)
        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Send")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End the answers being generated; what was said so far stays")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)

    def _sampling_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.system = QLineEdit(placeholderText="optional system prompt (applies from the next message)")
        self.max_tokens = QSpinBox(minimum=1, maximum=4096, value=256)
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.1, decimals=2, value=0.0)
        self.temperature.setSpecialValueText("0 (greedy)")
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, decimals=2, value=1.0)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.seed.setToolTip("with a temperature above 0: the same seed draws the same answer")
        row.addWidget(self.system, 1)
        for label, w in (("max new tokens", self.max_tokens), ("temperature", self.temperature),
                         ("top-p", self.top_p), ("seed", self.seed)):
            row.addWidget(QLabel(label))
            row.addWidget(w)
        return row

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        """Ctrl+Return in the prompt sends; taken before the window's Start shortcut sees it."""
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
        self.new_chat()  # another model: another conversation

    def base_model(self) -> str:
        """The run's own base model, so the comparison is fair; else the current setting."""
        run_dir = self.run.run_dir()
        if run_dir:
            model = summarize(Path(run_dir)).model
            if model:
                return model
        return self.studio.settings.get("model", "name")

    # --- the conversation -------------------------------------------------------------
    def generate(self) -> None:
        prompt = self.prompt.toPlainText().strip()
        if not prompt or self.pending:
            return
        model, run_dir = self.base_model(), self.run.run_dir()
        sides = ([(None, self.base_pane)] if self.compare.isChecked() or not run_dir else []) \
            + ([(run_dir, self.tuned_pane)] if run_dir else [])
        for rd, pane in sides:
            job = P.Generate(model=model, prompt=prompt, run_dir=rd, system=self.system.text().strip() or None,
                             history=list(pane.turns), max_new_tokens=self.max_tokens.value(),
                             temperature=self.temperature.value(), top_p=self.top_p.value(), seed=self.seed.value())
            pane.ask(prompt)
            self.pending[self.studio.bridge.submit(job)] = pane
        self.prompt.clear()
        self._update_buttons()

    def stop(self) -> None:
        """Ends the answer in progress and drops the one still waiting its turn."""
        if not self.pending:
            return
        waiting = [job_id for job_id in self.pending if job_id != getattr(self.studio.bridge.current_job, "id", None)]
        self.studio.bridge.drop_queued(lambda c: c.id in waiting)
        for job_id in waiting:
            self.pending.pop(job_id).failed("Not generated: stopped before its turn.")
        if self.pending:
            self.studio.bridge.control(P.Stop())
        self._update_buttons()

    def new_chat(self) -> None:
        if self.pending:
            self.stop()
        self.base_pane.clear()
        self.tuned_pane.clear()

    # --- events ---------------------------------------------------------------------------
    def _on_chunk(self, e: P.GenerationChunk) -> None:
        pane = self.pending.get(e.job_id)
        if pane is not None:
            pane.add(e.text)

    def _on_result(self, e: P.GenerationResult) -> None:
        pane = self.pending.pop(e.job_id, None)
        if pane is not None:
            pane.answered(e)
            self._update_buttons()

    def _on_error(self, e: P.Error) -> None:
        pane = self.pending.pop(e.job_id, None)
        if pane is not None:
            pane.failed(e.message, e.hint)
            self._update_buttons()

    def _update_buttons(self) -> None:
        self.generate_button.setEnabled(not self.pending)
        self.stop_button.setEnabled(bool(self.pending))

    def _finish_all(self) -> None:
        for pane in self.pending.values():
            pane.failed("The engine process stopped before answering.")
        self.pending.clear()
        self._update_buttons()
