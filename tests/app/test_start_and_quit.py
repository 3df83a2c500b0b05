"""Starting and quitting the app, again and again, never crashes (the exit included)."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from xgblora_app.qt_compat import binding_problem

pytestmark = pytest.mark.slow


def start_and_quit(home, *args):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=str(home / "data"),
               XDG_CONFIG_HOME=str(home / "config"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-X", "faulthandler", "-m", "xgblora_app", *args, "--quit-after", "0"],
                          capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.parametrize("mode", ["demo", "real"])
def test_fifteen_starts_and_quits_without_a_crash(tmp_path, mode):
    if binding_problem() is not None:
        pytest.skip(binding_problem())
    extra = ["--demo"] if mode == "demo" else ["--runs", str(tmp_path / "runs")]
    # two at a time, one thread each (the machine has two cores), each with its own settings
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: start_and_quit(tmp_path / str(n % 2), *extra), range(15)))
    for n, done in enumerate(results):
        assert done.returncode == 0, f"start {n}: exit {done.returncode}\n{done.stderr[-3000:]}"
        assert "window shown" in done.stdout


def test_a_leaking_binding_is_refused_at_start_with_the_fix(tmp_path):
    problem = binding_problem()
    if problem is None:
        pytest.skip("the installed PySide6 does not leak")
    done = start_and_quit(tmp_path, "--demo")
    assert done.returncode == 2 and "PySide6-Essentials!=" in done.stderr and "Traceback" not in done.stderr
