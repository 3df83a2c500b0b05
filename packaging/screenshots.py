"""Screenshots of every panel of the real window, driven by the scripted engine.

    xvfb-run -a -s "-screen 0 1600x1000x24" python packaging/screenshots.py docs/screenshots

Runs the real MainWindow on the real platform plugin (xcb under Xvfb), with the
FakeEngineClient standing in for the worker (no model is loaded), walks through the
panels and saves one PNG per panel with QWidget.grab().
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xgblora_app.fake_client import FakeEngineClient  # noqa: E402

from xgblora_app.main_window import PAGES, MainWindow, icon_path  # noqa: E402

SIZE = (1440, 920)


def wait(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(getattr(condition, "__name__", "condition"))
        wait(20)


class Shooter:
    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="xgblora-shots-"))
        # a two-GPU machine, so the Model panel shows its device list and GPU chooser
        self.fake = FakeEngineClient(runs_root=self.work / "runs", steps_per_poll=3, gpus=2)
        prefs = QSettings(str(self.work / "prefs.ini"), QSettings.Format.IniFormat)
        self.window = MainWindow(lambda: self.fake, runs_folder=self.work / "runs", settings=prefs)
        self.window.resize(*SIZE)
        self.window.show()
        wait_until(lambda: self.window.bridge.state == "idle" and not self.window.bridge.busy
                   and not self.window.bridge.queue)

    def page(self, name: str) -> None:
        self.window.nav.setCurrentRow(PAGES.index(name))
        wait(150)

    def shot(self, name: str) -> None:
        wait(250)  # two redraw periods of the plots
        path = self.out / f"{name}.png"
        self.window.grab().save(str(path))
        print("wrote", path)

    def run(self) -> None:
        w = self.window
        w.form.set_values({"train": {"max_steps": 200, "eval_every": 25}, "boost": {"merge_every": 10}})
        self.page("Model")
        self.shot("01-model")
        self.page("Data")
        wait_until(lambda: "training and" in w.data_panel.counts.text())
        self.shot("02-data")
        self.page("Method")
        self.shot("03-method")
        self.preflight()
        self.train()
        self.export()
        self.try_it()
        self.page("Runs")
        w.runs_panel.refresh()
        w.runs_panel.table.selectRow(0)
        self.shot("09-runs")
        self.dark()

    def preflight(self) -> None:
        w, fake = self.window, self.fake
        fake.available = 1000 * 2**20
        w.form.set_values({"train": {"batch_size": 8}, "data": {"seq_len": 512}})
        self.page("Preflight")
        w.preflight_panel.run()
        wait_until(lambda: w.preflight_panel.verdict.text() == "Will not fit")
        self.shot("04-preflight")
        w.form.set_values({"train": {"batch_size": 4}, "data": {"seq_len": 256}})
        fake.available = 4096 * 2**20
        w.preflight_panel.run()
        wait_until(lambda: w.preflight_panel.verdict.text() == "Fits")

    def train(self) -> None:
        w, fake = self.window, self.fake
        self.page("Train")
        w.train_panel.start()
        wait_until(lambda: w.train_panel.progress.value() >= 130)
        self.shot("05-train")
        wait_until(lambda: w.status.text().startswith("Run completed"))
        fake.die_at_step = 37
        w.form.set_values({"train": {"max_steps": 120}})
        w.train_panel.start()
        wait_until(lambda: w.resume_button.isVisible())
        self.shot("06-train-worker-died")
        fake.die_at_step = None
        w.train_panel.resume_run()
        wait_until(lambda: w.status.text().startswith("Run completed"))

    def export(self) -> None:
        w = self.window
        self.page("Export")
        first = sorted((self.work / "runs").iterdir())[0]
        w.export_panel.select_run(str(first))
        for fmt in ("peft", "gguf", "ollama"):
            w.export_panel.format_boxes[fmt].setChecked(True)
        w.export_panel.export()
        wait_until(lambda: w.export_panel.export_button.isEnabled())
        self.shot("07-export")

    def try_it(self) -> None:
        w = self.window
        self.page("Try it")
        w.chat_panel.prompt.setPlainText("Briefly explain the Python topic: The \"with\" statement.")
        w.chat_panel.generate()
        wait_until(lambda: w.chat_panel.generate_button.isEnabled())
        self.shot("08-try-it")

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
        app.setPalette(palette)
        self.page("Runs")
        self.page("Train")
        self.shot("10-train-dark")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "screenshots"
    app = QApplication(argv[:1])
    app.setStyle("Fusion")
    app.setApplicationName("XGBLoRA Studio")
    if (icon := icon_path()) is not None:
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))
    shooter = Shooter(out)
    shooter.run()
    shooter.window.close()
    shooter.window.deleteLater()  # before the interpreter tears Qt down
    wait(50)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
