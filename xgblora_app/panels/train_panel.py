"""Train: start, pause, continue, stop; progress with ETA; live plots; the log; and what
went wrong (a NaN round, tight memory, a dead worker) with what to do about it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from xgblora_app.context import Studio
from xgblora_app.format import duration, human_bytes, transfer_text
from xgblora_app.format import loss as fmt_loss
from xgblora_app.panels.samples_view import SamplesView
from xgblora_app.plots import TrainingPlots
from xgblora_app.state.series import TrainingSeries
from xgblora_app.widgets import Banner
from xgblora_engine import protocol as P
from xgblora_engine.errors import UserError
from xgblora_engine.rundir import new_run_name

ACTIVE = {"loading", "preflight", "training", "paused", "stopping"}


def fresh_run_dir(root: Path, name: str, taken: set[Path]) -> Path:
    """A run folder that does not exist and was not handed out yet (names have one-second
    resolution, and a queued run's folder is made only when the engine starts it)."""
    path, n = root / name, 1
    while path.exists() or path in taken:
        n += 1
        path = root / f"{name}-{n}"
    return path


class TrainPanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.series = TrainingSeries()
        self.run_ids: set[int] = set()  # every run job this panel sent (errors are matched by id)
        self.active: int | None = None  # the run job the panel shows; None when none is under way
        self.issued: set[Path] = set()  # run folders given to StartRun jobs
        self.total_steps = 0
        self.step_seconds: float | None = None  # smoothed, for the ETA
        self.last_force = False
        self.recent: list[P.StepMetrics] = []  # steps since the status timer last showed one
        self.log_lines: list[str] = []  # written to the log view by the status timer
        self._build()
        # A progress bar repaints on every setValue (~1 ms here), a log line costs about as
        # much: events only queue their steps and lines, shown 10 times a second.
        self.status_timer = QTimer(self, interval=100)
        self.status_timer.timeout.connect(self._show_latest)
        self.status_timer.start()
        b = studio.bridge
        b.run_started.connect(self._on_run_started)
        b.download_progress.connect(self._on_download)
        b.step_metrics.connect(self._on_step)
        b.round_merged.connect(self._on_merge)
        b.round_rolled_back.connect(self._on_rollback)
        b.eval_result.connect(lambda e: self.log(f"held-out loss at step {e.step}: {e.eval_loss:.4f}"))
        b.checkpoint_saved.connect(lambda e: self.log(f"checkpoint at step {e.step} (round {e.round})"))
        b.log_line.connect(lambda e: self.log(e.text))
        b.warning.connect(self._on_warning)
        b.error.connect(self._on_error)
        b.finished.connect(self._on_finished)
        b.worker_exited.connect(self._on_worker_exited)
        b.state_changed.connect(self._on_state)
        b.event.connect(self._feed)
        b.engine_state.connect(lambda _: self._update_buttons())
        self._update_buttons()

    # --- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start a new run with the current settings (Ctrl+Return)")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Hold after the current optimizer step")
        self.continue_button = QPushButton("Continue")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current optimizer step (Ctrl+., or Esc which asks first). "
                                    "A checkpoint keeps everything, the round in progress included; Resume "
                                    "continues exactly where the run stopped.")
        self.resume_button = QPushButton("Resume run")
        self.resume_button.setToolTip("Continue the last stopped, failed or interrupted run from its newest checkpoint")
        self.force = QCheckBox("start even if the preflight says it will not fit")
        self.start_button.clicked.connect(lambda: self.start())
        self.pause_button.clicked.connect(self.pause)
        self.continue_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(lambda: self.resume_run())
        for w in (self.start_button, self.pause_button, self.continue_button, self.stop_button, self.resume_button):
            row.addWidget(w)
        row.addWidget(self.force)
        row.addStretch(1)
        layout.addLayout(row)
        self.progress = QProgressBar()
        # no step count before a run: the bar's own range (100) is not the run's length
        self.progress.setFormat("no run yet")
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = QLabel("Ready. Pick the model, data and method, then press Start.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.banner = Banner()
        layout.addWidget(self.banner)
        split = QSplitter(Qt.Orientation.Vertical)
        self.plots = TrainingPlots(self.series)
        self.samples_view = SamplesView(self.series)
        self.pages = QTabWidget()
        self.pages.addTab(self.plots, "Plots")
        self.pages.addTab(self.samples_view, "Samples")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)  # a long run's log stays cheap
        split.addWidget(self.pages)
        split.addWidget(self.log_view)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        layout.addWidget(split, 1)

    # --- actions ------------------------------------------------------------------------
    def start(self, force: bool | None = None) -> None:
        if not self.start_button.isEnabled():
            return
        try:
            cfg = self.studio.settings.validated()
        except UserError as exc:
            self.banner.show_message("error", exc.message, exc.hint)
            return
        self.last_force = self.force.isChecked() if force is None else force
        run_dir = fresh_run_dir(self.studio.session.runs_root, new_run_name(cfg.model.name), self.issued)
        self.issued.add(run_dir)
        self.series.clear()
        self.plots.refresh(force=True)
        self.log(f"— new run {run_dir}")
        self._begin(P.StartRun(config=cfg, run_dir=str(run_dir), force=self.last_force),
                    f"Starting {run_dir.name}: preparing the data and loading the model…")

    def resume_run(self, run_dir: str | None = None) -> None:
        """Continue a stopped/failed/killed run; starts a fresh worker if the last one died."""
        run_dir = run_dir or self.studio.session.run_dir
        if not run_dir or self.running:
            return
        bridge = self.studio.bridge
        if not bridge.client or not bridge.client.is_alive():
            self.log("— starting a new engine process")
            bridge.start()
        self.studio.session.set_run_dir(run_dir)
        self.log(f"— resuming {run_dir}")
        self._begin(P.ResumeRun(run_dir=run_dir, force=self.force.isChecked()),
                    f"Resuming {Path(run_dir).name} from its newest checkpoint…")

    def pause(self) -> None:
        if self.pause_button.isEnabled():
            self.studio.bridge.control(P.Pause())

    def resume(self) -> None:
        if self.continue_button.isEnabled():
            self.studio.bridge.control(P.Resume())

    def stop(self) -> None:
        if self.stop_button.isEnabled():
            self.studio.bridge.control(P.Stop())
            self.status.setText("Stopping after the current optimizer step (a checkpoint keeps everything)…")

    @property
    def running(self) -> bool:
        return self.active is not None

    def _begin(self, job: P.Command, text: str) -> None:
        self.active = self.studio.bridge.submit(job)
        self.run_ids.add(self.active)
        self.banner.clear()
        self.step_seconds = None
        self.status.setText(text)
        self._update_buttons()

    # --- events ---------------------------------------------------------------------
    def _ours(self, event: P.Event) -> bool:
        """Whether the event comes from the run job on show (a finished job's last
        events, arriving after a new one was queued, do not)."""
        return self.active is not None and event.job_id == self.active

    def _feed(self, event) -> None:
        if self._ours(event):
            self.series.add(event)  # drawn by the plots' own 20 Hz timer

    def _on_run_started(self, e: P.RunStarted) -> None:
        if not self._ours(e):
            return
        self.studio.session.set_run_dir(e.run_dir)
        self.total_steps = e.total_steps
        self.progress.setFormat("step %v of %m")
        self.progress.setRange(0, e.total_steps)
        self.progress.setValue(e.start_step)
        self.status.setText(f"Training: {e.total_steps} steps in {e.total_rounds} rounds on {e.n_layers} layers")
        self.log(e.data_report)

    def _on_download(self, e: P.DownloadProgress) -> None:
        if not self._ours(e):
            return
        self.progress.setFormat("%p% downloaded")
        self.progress.setRange(0, 1000)
        self.progress.setValue(round(1000 * e.done_bytes / e.total_bytes) if e.total_bytes else 0)
        self.status.setText(f"Downloading {e.repo_id}: " + transfer_text(e.done_bytes, e.total_bytes, e.bytes_per_s)
                            + " · Stop cancels it; what is downloaded is kept for the next start")

    def _on_step(self, e: P.StepMetrics) -> None:
        if self._ours(e):
            self.recent.append(e)

    def _show_latest(self) -> None:
        self._write_log()
        self.samples_view.refresh()
        steps, self.recent = self.recent, []
        if not steps:
            return
        a = 0.2  # recent steps count most: speed changes with the layers drawn
        for e in steps:
            self.step_seconds = e.seconds if self.step_seconds is None else (1 - a) * self.step_seconds + a * e.seconds
        self.progress.setValue(e.step)
        eta = (self.total_steps - e.step) * self.step_seconds
        self.status.setText(f"Step {e.step}/{self.total_steps} · round {e.round} · loss {e.loss:.4f} · "
                            f"{e.tokens_per_s:.0f} tokens/s · about {duration(eta)} left")

    def _on_merge(self, e: P.RoundMerged) -> None:
        if self._ours(e):
            at = f" at {e.update_multiple:.2f}× its update" if e.update_multiple != 1.0 else ""
            self.log(f"round {e.round} merged{at} at step {e.step}: layers {e.layers}, booster norm {e.booster_norm:.3g}")

    def _on_rollback(self, e: P.RoundRolledBack) -> None:
        if not self._ours(e):
            return
        hint = (f"it is retried at {e.retry_lr_factor:g}× the learning rate" if e.retry_lr_factor
                else "the run stops; lower the learning rate and resume")
        self.log(f"round {e.round} rolled back at step {e.step}: {e.reason}")
        self.banner.show_message("warning", f"Round {e.round} was rolled back: {e.reason}.", hint)

    def _on_warning(self, e) -> None:
        if self._ours(e):
            self.log(f"warning: {e.message}")
            self.banner.show_message("warning", e.message, e.hint)

    def _on_error(self, e: P.Error) -> None:
        if e.job_id and e.job_id not in self.run_ids:
            return  # another panel's request
        self.log(f"error: {e.message}" + (f"\n{e.detail}" if e.detail else ""))
        actions = []
        if "will not fit" in e.message and not self.last_force:
            actions.append(("Start anyway", lambda: self.start(force=True)))
        elif self.studio.session.run_dir and e.kind in ("oom", "internal", "crash"):
            actions.append(("Resume run", lambda: self.resume_run()))
        self.banner.show_message("error", e.message, e.hint, actions)
        self.status.setText(e.message[0].upper() + e.message[1:] + ".")  # a Finished, if one follows, says more

    def _on_finished(self, e: P.Finished) -> None:
        if not self._ours(e):
            return
        self.series.flush()
        self._show_latest()
        self.active = None
        if e.run_dir:
            self.studio.session.set_run_dir(e.run_dir)
        held_out = ""
        if e.final_eval_loss is not None:  # say when it was measured: after a Stop it can be the step-0 one
            at = self.series.eval_steps.view()
            held_out = f", held-out loss {fmt_loss(e.final_eval_loss)}" + (f" (at step {int(at[-1])})" if len(at) else "")
        self.status.setText(f"Run {e.status} after {e.steps} steps: loss {fmt_loss(e.final_loss)}{held_out}."
                            + (f" {e.message}" if e.message else ""))
        self.log(f"— run {e.status} after {e.steps} steps")
        self.studio.session.notify("runs_changed")
        self._update_buttons()

    def _on_worker_exited(self, e: P.WorkerExited) -> None:
        self.series.flush()
        self._show_latest()
        was_running, self.active = self.running, None
        self.log(f"engine process exited: {e.message}")
        if e.exitcode == 0 and not was_running:
            return
        run_dir = self.studio.session.run_dir
        actions = [("Restart engine", self.studio.bridge.start)]
        if run_dir:
            actions.insert(0, ("Resume run", lambda: self.resume_run()))
        peak = self.series.rss.view().max() if len(self.series.rss) else None
        detail = f" Last memory reading: {human_bytes(peak)}." if peak else ""
        self.banner.show_message("error", f"The engine stopped: {e.message}.{detail}",
                                  "The window and the run's checkpoints are intact. " +
                                  ("Resume the run from its last checkpoint, with a smaller batch or sequence "
                                   "length if memory ran out." if run_dir else "Restart the engine to continue."),
                                  actions)
        self.status.setText("The engine process is gone.")
        self.studio.session.notify("runs_changed")
        self._update_buttons()

    def _on_state(self, e: P.StateChanged) -> None:
        if e.state == "idle" and self._ours(e):
            self.active = None  # the job ended without a Finished (e.g. refused before it started)
        if e.state == "paused":
            self.status.setText("Paused after the current optimizer step. Continue or stop.")
        elif e.detail and self._ours(e):
            self.status.setText(e.detail[0].upper() + e.detail[1:])
        self._update_buttons()

    # --- helpers ----------------------------------------------------------------------
    def _update_buttons(self) -> None:
        state = self.studio.bridge.state
        ours_active = self.running and state in ACTIVE
        self.start_button.setEnabled(not self.running and state not in ("dead", "stopped"))
        self.pause_button.setEnabled(ours_active and state == "training")
        self.continue_button.setEnabled(ours_active and state == "paused")
        self.stop_button.setEnabled(ours_active and state in ("training", "paused", "loading", "preflight"))
        can_resume = not self.running and bool(self.studio.session.run_dir) and self._resumable()
        self.resume_button.setVisible(can_resume)

    def _resumable(self) -> bool:
        from xgblora_engine.runs import summarize

        run_dir = self.studio.session.run_dir
        return bool(run_dir) and Path(run_dir, "run.json").exists() and summarize(Path(run_dir)).resumable

    def log(self, text: str) -> None:
        self.log_lines.append(text)

    def _write_log(self) -> None:
        if self.log_lines:
            lines, self.log_lines = self.log_lines, []
            self.log_view.appendPlainText("\n".join(lines))
