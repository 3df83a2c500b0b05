"""Screenshots of every panel of the real window, from the real engine.

    OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1600x1000x24" python packaging/screenshots.py docs/screenshots

Runs the real MainWindow on the real platform plugin (xcb under Xvfb) with the real
engine worker on the embedded SmolLM2-135M: it reads the bundled sample data (the
rendered preview is the engine's), runs a preflight, trains a short run with the
default method (plots, layer heatmap and memory are that run's), kills a second run's
worker, compares the two in the history, exports the first run, holds a two-message
conversation with the base and the tuned model and reopens the run from the history. Then, for what this machine cannot show (two GPUs in
the device chooser), it takes one shot with the demo engine; that shot's name says so.

Takes about ten minutes on two CPU cores. ``--demo`` takes every shot from the demo
engine instead (seconds; no model is loaded), e.g. to check the layout after a UI change.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xgblora_app.demo_engine import DemoEngine  # noqa: E402
from xgblora_app.main_window import PAGES, MainWindow, icon_path, worker_client  # noqa: E402

SIZE = (1440, 920)
# The method's defaults (rank, κ, lr, k); a short run (two rounds) on short sequences,
# so the screenshots take minutes on a CPU.
SETTINGS = {"data": {"seq_len": 128, "max_eval_examples": 8},
            "train": {"max_steps": 40, "batch_size": 2, "eval_every": 10}}
PROMPT = "Briefly explain the Python topic: The \"with\" statement."
FOLLOW_UP = "Give a one-line example."
MINUTE = 60.0


def wait(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(getattr(condition, "__name__", "condition"))
        wait(50)


class Shooter:
    def __init__(self, out: Path, factory, work: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.work = work
        prefs = QSettings(str(work / "prefs.ini"), QSettings.Format.IniFormat)
        prefs.setValue("run/settings", json.dumps(SETTINGS))
        self.window = MainWindow(factory, runs_folder=work / "runs", settings=prefs)
        self.window.resize(*SIZE)
        self.window.show()

    def settle(self, timeout: float) -> None:
        """Until the engine has answered everything asked of it."""
        bridge = self.window.bridge
        wait_until(lambda: bridge.state == "idle" and not bridge.busy and not bridge.queue, timeout)

    def page(self, name: str) -> None:
        self.window.nav.setCurrentRow(PAGES.index(name))
        wait(150)

    def shot(self, name: str) -> None:
        wait(250)  # two redraw periods of the plots
        path = self.out / f"{name}.png"
        self.window.grab().save(str(path))
        print("wrote", path, flush=True)

    def run(self) -> None:
        w = self.window
        self.page("Data")  # the tokenizer's view comes before the model has loaded
        wait_until(lambda: w.studio.session.data_report is not None, 30 * MINUTE)
        self.shot("02-data")
        self.page("Model")
        wait_until(lambda: w.studio.session.model_info is not None, 30 * MINUTE)
        self.settle(30 * MINUTE)
        self.shot("01-model")
        self.page("Method")
        self.shot("03-method")
        self.train()
        self.history()
        self.dark()
        self.killed()
        self.compare()
        self.preflight()
        self.try_it()
        self.export()

    def preflight(self) -> None:
        """A larger batch and longer sequences against a 1.5 GB budget: will not fit, with remedies."""
        w = self.window
        w.form.set_values({"train": {"batch_size": 8}, "data": {"seq_len": 512}})
        self.page("Preflight")
        w.preflight_panel.limit.setValue(1.5)
        w.preflight_panel.trial.setChecked(False)
        earlier = w.preflight_panel.bar.result  # the start's own preflight: not this one
        w.preflight_panel.run()
        wait_until(lambda: w.preflight_panel.bar.result is not earlier, 10 * MINUTE)
        self.settle(10 * MINUTE)
        self.shot("04-preflight")
        w.form.set_values(SETTINGS)
        w.preflight_panel.limit.setValue(0)

    def train(self) -> None:
        w = self.window
        self.page("Train")
        w.train_panel.start()
        wait_until(lambda: w.train_panel.progress.value() >= 30, 40 * MINUTE)
        self.shot("05-train")
        wait_until(lambda: w.status.text().startswith("Run completed"), 20 * MINUTE)
        self.first_run = w.studio.session.run_dir
        w.train_panel.pages.setCurrentWidget(w.train_panel.samples_view)  # what the model says, step by step
        self.shot("12-train-samples")
        w.train_panel.pages.setCurrentWidget(w.train_panel.plots)

    def killed(self) -> None:
        """A second run whose worker is killed, as the system's out-of-memory killer does."""
        w = self.window
        w.train_panel.start()
        # this run's own steps: the bar still shows the first run's until the new one starts
        wait_until(lambda: w.studio.session.run_dir != self.first_run and w.train_panel.progress.value() >= 3,
                   20 * MINUTE)
        w.bridge.client.kill()
        wait_until(lambda: w.resume_button.isVisible(), MINUTE)
        self.shot("06-train-worker-died")
        w.bridge.start()
        self.settle(5 * MINUTE)

    def export(self) -> None:
        w = self.window
        self.page("Export")
        w.export_panel.select_run(self.first_run)
        for fmt, box in w.export_panel.format_boxes.items():
            box.setChecked(fmt in ("hf", "peft"))  # GGUF needs llama.cpp's converter, not installed here
        w.export_panel.out.setText(str(Path(self.first_run) / "exports"))
        w.export_panel.export()
        wait_until(lambda: w.export_panel.export_button.isEnabled(), 30 * MINUTE)
        self.shot("07-export")

    def try_it(self) -> None:
        w = self.window
        self.page("Try it")
        w.chat_panel.select_run(self.first_run)
        w.chat_panel.max_tokens.setValue(48)
        for message in (PROMPT, FOLLOW_UP):  # a conversation: the second answer sees the first
            w.chat_panel.prompt.setPlainText(message)
            w.chat_panel.generate()
            wait_until(lambda: w.chat_panel.generate_button.isEnabled(), 20 * MINUTE)
        self.shot("08-try-it")

    def history(self) -> None:
        w = self.window
        self.page("Runs")
        w.runs_panel.refresh()
        row = next(i for i, r in enumerate(w.runs_panel.runs) if str(r.path) == self.first_run)
        w.runs_panel.table.selectRow(row)
        self.shot("09-runs")

    def compare(self) -> None:
        """The finished run beside the killed one: curves, memory and what differs."""
        w = self.window
        self.page("Runs")
        w.runs_panel.refresh()
        w.runs_panel.table.selectAll()
        self.shot("13-runs-compare")

    def dark(self) -> None:
        app = QApplication.instance()
        palette = QPalette()
        for role, colour in ((QPalette.ColorRole.Window, (37, 37, 38)), (QPalette.ColorRole.Base, (30, 30, 30)),
                             (QPalette.ColorRole.AlternateBase, (45, 45, 48)),
                             (QPalette.ColorRole.WindowText, (230, 230, 230)),
                             (QPalette.ColorRole.Text, (230, 230, 230)), (QPalette.ColorRole.Button, (50, 50, 52)),
                             (QPalette.ColorRole.ButtonText, (230, 230, 230)),
                             (QPalette.ColorRole.Highlight, (0, 114, 178))):
            palette.setColor(role, QColor(*colour))
        for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
            palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 120, 120))
        original = app.palette()
        app.setPalette(palette)
        self.page("Runs")
        self.page("Train")
        self.shot("10-train-dark")
        app.setPalette(original)

    def close(self) -> None:
        self.window.close()
        self.window.deleteLater()  # before the interpreter tears Qt down
        wait(50)


def two_gpu_chooser(out: Path, work: Path) -> None:
    """The Model panel on a machine with two GPUs, which this one is not: the demo engine's
    Hello lists two made-up cards, and the file name says the shot is scripted."""
    demo = DemoEngine(runs_root=work / "runs", gpus=2)
    shooter = Shooter(out, lambda: demo, work)
    shooter.settle(MINUTE)
    shooter.page("Model")
    shooter.shot("11-model-two-gpus-scripted")
    shooter.close()


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if not a.startswith("--")]
    out = Path(args[0]) if args else ROOT / "docs" / "screenshots"
    app = QApplication(argv[:1])
    app.setStyle("Fusion")
    app.setApplicationName("XGBLoRA Studio")
    if (icon := icon_path()) is not None:
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))
    work = Path(tempfile.mkdtemp(prefix="xgblora-shots-"))
    factory = worker_client
    if "--demo" in argv:
        demo = DemoEngine(runs_root=work / "engine" / "runs", steps_per_poll=3)
        factory = lambda: demo  # noqa: E731
    (work / "two-gpus").mkdir()
    two_gpu_chooser(out, work / "two-gpus")
    (work / "engine").mkdir()
    shooter = Shooter(out, factory, work / "engine")
    shooter.run()
    shooter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
