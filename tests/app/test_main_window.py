"""The window as a whole: pages, shortcuts, persistence, start-up, theme."""

import json
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QMessageBox

from tests.app.helpers import train_run_folder
from xgblora_app.main_window import PAGES, MainWindow
from xgblora_engine import config as C
from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]


def test_every_page_is_reachable_and_the_engine_was_asked_about_model_and_data(window, fake):
    assert [window.nav.item(i).text().split()[0] for i in range(window.nav.count())] == [p.split()[0] for p in PAGES]
    for i in range(len(PAGES)):
        window.nav.setCurrentRow(i)
        assert window.stack.currentWidget() is window.panels[i]
    inspects = [c for c in fake.sent if isinstance(c, P.Inspect)]
    assert any(c.model for c in inspects) and any(c.data for c in inspects)
    assert window.engine_label.text() == "Engine: ready"


def test_ctrl_return_starts_and_escape_stops_after_asking(qtbot, window, fake, monkeypatch):
    window.form.set_values({"train": {"max_steps": 400}})
    fake.steps_per_poll = 1
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert fake.sent_types()[-1] == "StartRun" and window.stack.currentWidget() is window.train_panel
    qtbot.waitUntil(lambda: window.train_panel.stop_button.isEnabled(), timeout=3000)
    asked = []

    def answer(reply):
        return lambda parent, title, text, *a: asked.append(text) or reply

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert fake.sent_types()[-1] != "Stop" and "continues exactly" in asked[-1]
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert fake.sent_types()[-1] == "Stop"
    qtbot.waitUntil(lambda: window.status.text().startswith("Run stopped"), timeout=3000)
    window.train_panel.start()
    qtbot.waitUntil(lambda: window.train_panel.stop_button.isEnabled(), timeout=3000)
    qtbot.keyClick(window, Qt.Key.Key_Period, Qt.KeyboardModifier.ControlModifier)
    assert fake.sent_types()[-1] == "Stop"


def test_settings_page_and_geometry_persist(qtbot, fake, runs_root, tmp_path):
    path = str(tmp_path / "prefs.ini")
    first = MainWindow(lambda: fake, runs_folder=runs_root, settings=QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(first)
    first.show()
    first.form.set_values({"boost": {"rank": 3}, "data": {"seq_len": 96}})
    first.nav.setCurrentRow(PAGES.index("Method"))
    first.resize(first.minimumSizeHint().width() + 10, 500)  # the offscreen screen clamps larger ones
    qtbot.waitUntil(lambda: first.bridge.state == "idle" and not first.bridge.busy, timeout=3000)
    qtbot.waitUntil(lambda: first.studio.session.model_info is not None, timeout=3000)
    expected = first.size()
    first.close()
    second = MainWindow(lambda: fake, runs_folder=runs_root, settings=QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(second)
    assert second.studio.settings.get("boost", "rank") == 3 and second.method_panel.rank.value() == 3
    assert second.data_panel.seq_len.value() == 96
    # the offscreen screen is 800 px wide and clamps the restored width; the height comes back
    assert second.nav.currentRow() == PAGES.index("Method") and second.size().height() == expected.height()
    assert second.studio.session.n_layers == 30  # remembered: no model load needed at start-up


def test_only_changed_settings_are_kept_so_new_defaults_reach_the_rest(qtbot, fake, runs_root, tmp_path,
                                                                        monkeypatch):
    path = str(tmp_path / "prefs.ini")
    first = MainWindow(lambda: fake, runs_folder=runs_root, settings=QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(first)
    first.form.set_values({"boost": {"merge_every": 7}})
    first.close()
    kept = json.loads(QSettings(path, QSettings.Format.IniFormat).value("run/overrides"))
    assert kept == {"boost": {"merge_every": 7}}
    def later_version_defaults():
        cfg = RunConfig()
        cfg.boost.rank = 5
        return cfg

    monkeypatch.setattr(C, "RunConfig", later_version_defaults)
    second = MainWindow(lambda: fake, runs_folder=runs_root, settings=QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(second)
    assert second.studio.settings.get("boost", "rank") == 5 and second.studio.settings.get("boost", "merge_every") == 7


def test_settings_kept_whole_by_an_older_version_still_load(qtbot, fake, runs_root, tmp_path):
    prefs = QSettings(str(tmp_path / "prefs.ini"), QSettings.Format.IniFormat)
    prefs.setValue("run/settings", json.dumps({"train": {"lr": 0.01}, "boost": {"rank": 3}}))
    window = MainWindow(lambda: fake, runs_folder=runs_root, settings=prefs)
    qtbot.addWidget(window)
    settings = window.studio.settings
    assert settings.get("boost", "rank") == 3 and settings.get("train", "lr_rule") == "fixed"  # as it meant then


def test_worker_death_in_the_window_offers_resume(qtbot, window, fake):
    window.form.set_values({"train": {"max_steps": 60}})
    fake.die_at_step = 15
    window.start()
    qtbot.waitUntil(lambda: window.resume_button.isVisible(), timeout=5000)
    assert "SIGKILL" in window.banner.text() and window.isVisible()
    assert window.engine_label.text() == "Engine: stopped unexpectedly"
    fake.die_at_step = None
    qtbot.mouseClick(window.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.status.text().startswith("Run completed"), timeout=5000)
    assert window.runs.count() == 1 and window.runs.runs[0].status == "completed"


def test_history_actions_lead_to_their_pages(qtbot, window, fake, runs_root):
    run = train_run_folder(runs_root, "killed", steps=20, killed_after=5)
    window.runs_panel.refresh()
    window.runs_panel.select(str(run))
    qtbot.mouseClick(window.runs_panel.export_button, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is window.export_panel and window.export_panel.run.currentData() == str(run)
    qtbot.mouseClick(window.runs_panel.resume_button, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is window.train_panel and fake.sent_types()[-1] == "ResumeRun"
    qtbot.waitUntil(lambda: window.status.text().startswith("Run completed"), timeout=5000)


def test_the_sidebar_marks_the_steps_that_are_ready(qtbot, window, fake):
    def mark(page):
        return window.nav.item(PAGES.index(page)).text()

    qtbot.waitUntil(lambda: mark("Model") == "Model ✓" and mark("Data") == "Data ✓", timeout=5000)
    assert mark("Method") == "Method ✓" and mark("Preflight") == "Preflight"  # not run yet
    window.form.set_values({"train": {"lr": -1.0}})  # the form accepts it; validation names it
    assert mark("Method") == "Method ✗" and "learning rate" in window.nav.item(PAGES.index("Method")).toolTip()
    window.form.set_values({"train": {"lr": 6e-3}})
    window.preflight_panel.run()
    qtbot.waitUntil(lambda: mark("Preflight") == "Preflight ✓", timeout=5000)


def test_a_past_run_s_settings_start_a_new_one(qtbot, window, fake, runs_root):
    run = train_run_folder(runs_root, "lr-1e-3", steps=20, lr=1e-3)
    window.runs_panel.refresh()
    window.runs_panel.select(str(run))
    qtbot.mouseClick(window.runs_panel.copy_button, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is window.method_panel
    assert window.form.get("train", "lr") == 1e-3 and window.form.get("train", "max_steps") == 20
    assert "lr-1e-3" in window.method_panel.banner.text()


def test_help_menu_has_the_docs_and_about(window, monkeypatch):
    menus = {a.text(): a.menu() for a in window.menuBar().actions()}
    assert [a.text() for a in menus["&Help"].actions()] == ["Documentation", "About XGBLoRA Studio"]
    shown = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append(text))
    menus["&Help"].actions()[1].trigger()
    assert "Engine protocol" in shown[0] and str(window.studio.session.runs_root) in shown[0]


def test_plots_follow_a_dark_palette(qtbot, window):
    app = QApplication.instance()
    old = app.palette()
    dark = QPalette(old)
    for role in (QPalette.ColorRole.Window, QPalette.ColorRole.Base):
        dark.setColor(role, QColor(30, 30, 30))
    dark.setColor(QPalette.ColorRole.Text, QColor(230, 230, 230))
    try:
        app.setPalette(dark)
        qtbot.waitUntil(lambda: window.plots.view.backgroundBrush().color().lightness() < 60, timeout=2000)
    finally:
        app.setPalette(old)


def test_start_up_loads_no_torch():
    """How long start-up takes is measured by benchmarks/gui_latency.py, not asserted here."""
    code = ("import sys; "
            "from xgblora_app.main_window import MainWindow; from PySide6.QtWidgets import QApplication; "
            "app = QApplication([]); from xgblora_app.demo_engine import DemoEngine; "
            "w = MainWindow(lambda: DemoEngine()); w.show(); app.processEvents(); "
            "print('torch' in sys.modules or 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(ROOT)})
    assert out.stdout.split()[-1] == "False"


def test_the_entry_point_opens_the_window_and_closes_cleanly(tmp_path):
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = subprocess.run([sys.executable, "-m", "xgblora_app", "--demo", "--runs", str(tmp_path / "runs"),
                          "--quit-after", "1"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "window shown" in out.stdout
