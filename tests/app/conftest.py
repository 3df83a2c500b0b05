"""GUI tests: real widgets, offscreen, driven by the scripted DemoEngine."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

QT_FREE = {"test_qt_compat.py", "test_start_and_quit.py", "test_state.py"}  # these test the check below themselves


def pytest_collection_modifyitems(config, items):
    """On Qt bindings that leak a reference with every repaint the GUI tests would abort
    the interpreter part-way; they are skipped with the reason and the fix instead."""
    from xgblora_app.qt_compat import binding_problem

    problem = binding_problem()
    if problem is None:
        return
    skip = pytest.mark.skip(reason=problem)
    for item in items:
        path = item.path
        if path.parent.name == "app" and path.parent.parent.name == "tests" and path.name not in QT_FREE:
            item.add_marker(skip)


@pytest.fixture
def prefs(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def runs_root(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def fake(request, runs_root):
    """The scripted engine; ``@pytest.mark.parametrize("fake", [{"gpus": 2}], indirect=True)``
    passes it more options."""
    from xgblora_app.demo_engine import DemoEngine

    return DemoEngine(runs_root=runs_root, steps_per_poll=5, **getattr(request, "param", {}))


@pytest.fixture
def studio(qtbot, fake, runs_root, prefs):
    """The shared context of the panels, with a started bridge on the fake engine."""
    from xgblora_app.context import Studio
    from xgblora_app.engine_bridge import EngineBridge
    from xgblora_app.state.run_settings import RunSettings
    from xgblora_app.state.session import Session

    bridge = EngineBridge(lambda: fake)
    bridge.start()
    qtbot.waitUntil(lambda: bridge.state == "idle", timeout=2000)
    yield Studio(bridge, RunSettings(), Session(runs_root), prefs)
    bridge.close()


@pytest.fixture
def panel(qtbot, studio):
    """Builds one panel on the studio and shows it."""

    def make(cls):
        widget = cls(studio)
        qtbot.addWidget(widget)
        widget.resize(1200, 800)
        widget.show()
        return widget

    return make


@pytest.fixture
def window(qtbot, fake, runs_root, prefs):
    from xgblora_app.main_window import MainWindow

    w = MainWindow(lambda: fake, runs_folder=runs_root, settings=prefs)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.bridge.state == "idle" and not w.bridge.busy and not w.bridge.queue, timeout=5000)
    return w
