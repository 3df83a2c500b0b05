"""XGBLoRA Studio's main window: a sidebar of steps (model → data → method → preflight →
train → export → try it → runs), one panel each, all fed by one engine bridge.

Views only: every action becomes a protocol command, every change on screen comes from
an event or from the plain-Python state in ``xgblora_app.state``. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec
from PySide6.QtCore import QEvent, QSettings, Qt, QThreadPool, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from xgblora_app.context import Studio
from xgblora_app.engine_bridge import EngineBridge
from xgblora_app.engine_client import ClientFactory, worker_client
from xgblora_app.format import transfer_text
from xgblora_app.panels.chat_panel import ChatPanel
from xgblora_app.panels.data_panel import DataPanel
from xgblora_app.panels.export_panel import ExportPanel
from xgblora_app.panels.method_panel import MethodPanel
from xgblora_app.panels.model_panel import ModelPanel
from xgblora_app.panels.preflight_panel import PreflightPanel
from xgblora_app.panels.runs_panel import RunsPanel
from xgblora_app.panels.train_panel import TrainPanel
from xgblora_app.qt_compat import binding_problem
from xgblora_app.state.run_settings import RunSettings
from xgblora_app.state.session import Session
from xgblora_engine.errors import UserError
from xgblora_engine.payloads import ModelInfo
from xgblora_engine.rundir import runs_root

PAGES = ("Model", "Data", "Method", "Preflight", "Train", "Export", "Try it", "Runs")
ENGINE_WORDS = {"starting": "starting…", "idle": "ready", "dead": "stopped unexpectedly", "stopped": "off"}

real_client = worker_client  # the name the end-to-end tests use


class MainWindow(QMainWindow):
    def __init__(self, client_factory: ClientFactory = worker_client, runs_folder: Path | None = None,
                 settings: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("XGBLoRA Studio")
        prefs = settings or QSettings("xgblora-studio", "xgblora-studio")
        run_settings = RunSettings()
        kept = _json(prefs.value("run/overrides"))
        # "run/settings" (every value) is what versions before the overrides kept
        skipped = run_settings.load_overrides(kept) if kept is not None else \
            run_settings.load(_json(prefs.value("run/settings")))
        self.bridge = EngineBridge(client_factory, parent=self)
        self.studio = Studio(self.bridge, run_settings, Session(Path(runs_folder) if runs_folder else runs_root()),
                             prefs)
        self.form = run_settings  # scripts set values with window.form.set_values({...})
        self._build()
        self._actions()
        self._restore()
        if skipped:
            self.statusBar().showMessage(f"Saved settings skipped (no longer valid): {', '.join(skipped)}", 8000)

    # --- layout ------------------------------------------------------------------------
    def _build(self) -> None:
        s = self.studio
        self.model_panel, self.data_panel = ModelPanel(s), DataPanel(s)
        self.method_panel, self.preflight_panel = MethodPanel(s), PreflightPanel(s)
        self.train_panel, self.export_panel = TrainPanel(s), ExportPanel(s)
        self.chat_panel, self.runs_panel = ChatPanel(s), RunsPanel(s)
        self.panels = [self.model_panel, self.data_panel, self.method_panel, self.preflight_panel,
                       self.train_panel, self.export_panel, self.chat_panel, self.runs_panel]
        self.nav = QListWidget()
        self.nav.addItems(list(PAGES))
        self.nav.setFixedWidth(self.nav.fontMetrics().horizontalAdvance("Preflight ✗") + 48)
        self.stack = QStackedWidget()
        for panel in self.panels:
            self.stack.addWidget(panel)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.engine_label = QLabel()
        self.statusBar().addPermanentWidget(self.engine_label)
        self.bridge.engine_state.connect(self._show_engine_state)
        self.bridge.jobs_changed.connect(lambda: self._show_engine_state(self.bridge.state))
        # whichever job loads the model (a run, a preflight) may have to download it first
        self.bridge.download_progress.connect(lambda e: self.statusBar().showMessage(
            f"Downloading {e.repo_id}: " + transfer_text(e.done_bytes, e.total_bytes, e.bytes_per_s), 5000))
        self.runs_panel.resume_requested.connect(self._resume_from_history)
        self.runs_panel.export_requested.connect(lambda d: self._go("Export", self.export_panel.select_run, d))
        self.runs_panel.try_requested.connect(lambda d: self._go("Try it", self.chat_panel.select_run, d))
        self.runs_panel.settings_copied.connect(lambda d: self._go("Method", self.method_panel.show_copied, d))
        s.session.subscribe("model_info", self._remember_model_info)
        for topic in ("model_info", "data_report", "preflight"):
            s.session.subscribe(topic, lambda _: self._show_readiness())
        s.settings.subscribe("changed", lambda *_: self._show_readiness())
        self._show_readiness()
        # the end-to-end tests and scripts reach the training controls through the window
        t = self.train_panel
        self.start_button, self.resume_button, self.progress = t.start_button, t.resume_button, t.progress
        self.status, self.banner, self.plots, self.runs = t.status, t.banner, t.plots, self.runs_panel

    def _actions(self) -> None:
        run_menu = self.menuBar().addMenu("&Run")
        for text, keys, slot in (("Start", ("Ctrl+Return", "Ctrl+Enter"), self.start),
                                 ("Pause", ("Ctrl+P",), self.train_panel.pause),
                                 ("Continue", ("Ctrl+Shift+P",), self.train_panel.resume),
                                 ("Stop", ("Ctrl+.",), self.stop),
                                 ("Stop (asks first)", ("Esc",), self.stop_asking),
                                 ("Run preflight", ("Ctrl+M",), self.preflight_panel.run)):
            action = QAction(text, self)
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(slot)
            run_menu.addAction(action)
            self.addAction(action)
        view = self.menuBar().addMenu("&View")
        for i, name in enumerate(PAGES):
            action = QAction(name, self)
            action.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            action.triggered.connect(lambda _=False, row=i: self.nav.setCurrentRow(row))
            view.addAction(action)
        help_menu = self.menuBar().addMenu("&Help")
        docs = QAction("Documentation", self)
        docs.setShortcut(QKeySequence.StandardKey.HelpContents)
        docs.triggered.connect(self.open_docs)
        about = QAction("About XGBLoRA Studio", self)
        about.triggered.connect(self.about)
        help_menu.addActions([docs, about])

    def _restore(self) -> None:
        prefs = self.studio.prefs
        geometry = prefs.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1360, 900)
        self.nav.setCurrentRow(int(prefs.value("window/page", 0)))
        run_dir = prefs.value("run/last")
        if run_dir and Path(run_dir, "run.json").exists():
            self.studio.session.set_run_dir(str(run_dir))
        info = _model_info(prefs.value(f"model_info/{self.studio.settings.get('model', 'name')}"))
        if info:
            self.studio.session.set_model_info(info)

    # --- engine --------------------------------------------------------------------
    def start_engine(self) -> None:
        """Spawn the worker, then ask it about the data (and the model, unless known)."""
        self.bridge.start()
        if self.studio.session.model_info is None:
            self.model_panel.inspect()
        self.data_panel.check()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self.bridge.client is None:
            QTimer.singleShot(0, self.start_engine)  # after the first paint: the window appears at once

    def _show_engine_state(self, state: str) -> None:
        queued = len(self.bridge.queue)
        job = self.bridge.current_job
        text = (f"Engine: {ENGINE_WORDS.get(state, state)}" + (f" · {type(job).__name__}" if job else "")
                + (f" · {queued} waiting" if queued else ""))
        self.engine_label.setText(text)

    # --- actions --------------------------------------------------------------------
    def start(self) -> None:
        self.nav.setCurrentRow(PAGES.index("Train"))
        self.train_panel.start()

    def stop(self) -> None:
        self.train_panel.stop()

    def stop_asking(self) -> None:
        """Esc is easy to press by accident: it asks first, and says what a Stop keeps."""
        if not self.train_panel.stop_button.isEnabled():
            return
        answer = QMessageBox.question(
            self, "Stop the run?",
            "Stop after the current optimizer step?\n\nNothing trained is lost: a checkpoint keeps every merged "
            "round and the round in progress (its boosters and optimizer state), and Resume continues exactly "
            "where the run stopped.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            self.stop()

    def _resume_from_history(self, run_dir: str) -> None:
        self.nav.setCurrentRow(PAGES.index("Train"))
        self.train_panel.resume_run(run_dir)

    def _go(self, page: str, select, run_dir: str) -> None:
        self.nav.setCurrentRow(PAGES.index(page))
        select(run_dir)

    # --- readiness and help -----------------------------------------------------------
    def readiness(self) -> dict[str, tuple[str, str]]:
        """Page -> (mark, why) for the steps before a run: ✓ ready, ! tight, ✗ not yet or not valid."""
        session, marks = self.studio.session, {}
        marks["Model"] = ("✓", "model loaded") if session.model_info else ("", "load the model (Load model info)")
        marks["Data"] = ("✓", "data checked") if session.data_report else ("", "check the data file")
        try:
            self.studio.settings.validated()
            marks["Method"] = ("✓", "settings valid")
        except UserError as exc:
            marks["Method"] = ("✗", exc.message)
        check = session.preflight
        verdict = check.verdict if check is not None else None
        marks["Preflight"] = {"fits": ("✓", "fits in memory"), "tight": ("!", "fits, but tightly"),
                              "wont_fit": ("✗", "will not fit: see the remedies")}.get(verdict, ("", "not run yet"))
        return marks

    def _show_readiness(self) -> None:
        for page, (mark, why) in self.readiness().items():
            item = self.nav.item(PAGES.index(page))
            item.setText(f"{page} {mark}".rstrip())
            item.setToolTip(why)

    def open_docs(self) -> None:
        docs = Path(__file__).resolve().parents[1] / "docs"
        if docs.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(docs)))
        else:
            QMessageBox.information(self, "Documentation", "The documentation is the docs/ folder of the "
                                    "XGBLoRA Studio source (README.md, docs/method.md, docs/benchmarks.md, docs/export.md).")

    def about(self) -> None:
        from xgblora_engine import __version__
        from xgblora_engine.protocol import PROTOCOL_VERSION

        QMessageBox.about(self, "About XGBLoRA Studio",
                          f"<b>XGBLoRA Studio {__version__}</b><br>Fine-tuning by gradient boosting over tiny "
                          f"LoRA boosters.<br><br>Engine protocol {PROTOCOL_VERSION} · runs in "
                          f"{self.studio.session.runs_root}<br>Apache-2.0")

    def _remember_model_info(self, info: ModelInfo | None) -> None:
        if info:
            self.studio.prefs.setValue(f"model_info/{self.studio.settings.get('model', 'name')}",
                                       msgspec.json.encode(info).decode())

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        prefs = self.studio.prefs
        prefs.setValue("window/geometry", self.saveGeometry())
        prefs.setValue("window/page", self.nav.currentRow())
        prefs.setValue("run/overrides", json.dumps(self.studio.settings.overrides()))
        prefs.remove("run/settings")
        if self.studio.session.run_dir:
            prefs.setValue("run/last", self.studio.session.run_dir)
        prefs.sync()
        # A run in progress stops at its next step; its round checkpoints make it resumable.
        self.bridge.close(timeout=15.0 if self.bridge.busy else 5.0)
        super().closeEvent(event)


def _json(value) -> dict | None:
    if not value:
        return None
    try:
        out = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return None
    return out if isinstance(out, dict) else None


def _model_info(value) -> ModelInfo | None:
    """What an earlier session learnt about the model; None if it is missing or stale."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return msgspec.json.decode(value, type=ModelInfo)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def icon_path() -> Path | None:
    """The app icon, from a source checkout or a bundle."""
    roots = [Path(getattr(sys, "_MEIPASS", "")), Path(__file__).resolve().parents[1]]
    for root in roots:
        candidate = root / "resources" / "icons" / "xgblora-studio.svg"
        if candidate.is_file():
            return candidate
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xgblora-studio", description="XGBLoRA Studio")
    parser.add_argument("--demo", action="store_true",
                        help="drive the window with a scripted engine (no model is loaded); runs go to a temp folder")
    parser.add_argument("--runs", type=Path, default=None, help="folder of run folders (default: the user data dir)")
    parser.add_argument("--quit-after", type=float, default=None, metavar="SECONDS",
                        help="close the window after this long (start-up checks of a bundle)")
    args, _ = parser.parse_known_args(argv[1:])  # the rest is Qt's (-style, -platform …)
    return args


def demo_factory(runs: Path) -> ClientFactory:
    from xgblora_app.demo_engine import DemoEngine

    client = DemoEngine(runs_root=runs, steps_per_poll=1)
    return lambda: client


def run_app(argv: list[str]) -> int:
    args = parse_args(argv)
    if (problem := binding_problem()) is not None:
        print(f"xgblora-studio: {problem}", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("XGBLoRA Studio")
    app.setOrganizationName("xgblora-studio")
    app.setDesktopFileName("xgblora-studio")
    if (icon := icon_path()) is not None:
        app.setWindowIcon(QIcon(str(icon)))
    factory, runs = worker_client, args.runs
    if args.demo:
        import tempfile

        runs = runs or Path(tempfile.mkdtemp(prefix="xgblora-demo-"))
        factory = demo_factory(runs)
    window = MainWindow(factory, runs_folder=runs)
    window.show()
    if args.quit_after is not None:
        QTimer.singleShot(0, lambda: print("xgblora-studio: window shown", flush=True))
        QTimer.singleShot(int(args.quit_after * 1000), window.close)
    code = app.exec()
    # Background tasks (widgets.run_in_background) report to widgets: they must be done
    # before those widgets go, or a late report touches a deleted object.
    QThreadPool.globalInstance().clear()
    QThreadPool.globalInstance().waitForDone()
    window.deleteLater()  # Qt objects go before the interpreter tears down
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return code
