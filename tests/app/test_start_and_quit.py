"""Starting and quitting the app, again and again, never crashes (the exit included)."""

import os
import subprocess
import sys

import pytest

from xgblora_app.qt_compat import binding_problem

pytestmark = pytest.mark.slow


def start_and_quit(tmp_path, *args):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    return subprocess.run([sys.executable, "-X", "faulthandler", "-m", "xgblora_app", *args, "--quit-after", "0"],
                          capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.parametrize("mode", ["demo", "real"])
def test_fifteen_starts_and_quits_without_a_crash(tmp_path, mode):
    if binding_problem() is not None:
        pytest.skip(binding_problem())
    extra = ["--demo"] if mode == "demo" else ["--runs", str(tmp_path / "runs")]
    for n in range(15):
        done = start_and_quit(tmp_path, *extra)
        assert done.returncode == 0, f"start {n}: exit {done.returncode}\n{done.stderr[-3000:]}"
        assert "window shown" in done.stdout


def test_a_leaking_binding_is_refused_at_start_with_the_fix(tmp_path):
    problem = binding_problem()
    if problem is None:
        pytest.skip("the installed PySide6 does not leak")
    done = start_and_quit(tmp_path, "--demo")
    assert done.returncode == 2 and "PySide6-Essentials!=" in done.stderr and "Traceback" not in done.stderr
