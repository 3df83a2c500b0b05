"""How late the window's event loop runs while a training run floods it with events.

A stand-in engine client replays a run at 100× the event rate of a real one (a real run
on a small model and a fast GPU sends about 7 optimizer steps a second, each a
StepMetrics and a MemorySample, plus a RoundMerged per round and an EvalResult now and
then). Its events are encoded up front and decoded in ``poll()``, as the real client
decodes what the worker sends. The window shows the Train page, so its plots are on
screen, and a 5 ms probe timer records how late the event loop runs it.

    QT_QPA_PLATFORM=offscreen python -m benchmarks.gui_latency [--steps 4000] [--rate 100]

Writes benchmarks/results/gui_latency.json: lateness median / p99 / max, redraws per
second, the time spent per redraw, the time from a fresh interpreter to a shown window
(no torch loaded), and the machine it ran on (cores, load average).
Goal: p99 under 16 ms (one frame at 60 Hz).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

RESULTS = Path(__file__).resolve().parent / "results"
REAL_STEPS_PER_S = 20 / 0.03 / 100  # the rate the scripted engine's flood is a hundredfold of
PROBE_MS = 5


class FloodClient:
    """An engine client whose training job replays ``steps`` steps at ``steps_per_s``."""

    def __init__(self, steps: int, steps_per_s: float, kappa: int = 10, eval_every: int = 100) -> None:
        from xgblora_engine import protocol as P

        self.P = P
        self.steps, self.steps_per_s, self.kappa, self.eval_every = steps, steps_per_s, kappa, eval_every
        self._out: deque[bytes] = deque()
        self._script: list[tuple[float, list[bytes]]] = []
        self._started: float | None = None
        self._alive = False
        self.events = 0

    def start(self) -> None:
        self._alive = True
        self._out.append(self.P.encode(self.P.Hello(version=self.P.PROTOCOL_VERSION, pid=1, devices=[])))

    def is_alive(self) -> bool:
        return self._alive

    def send(self, command) -> None:
        P = self.P
        if isinstance(command, P.StartRun):
            self._script = self._run_script(command.run_dir, command.id)
            self._started = time.perf_counter()
        elif isinstance(command, (P.Estimate, P.Inspect, P.Export, P.Generate, P.ResumeRun)):
            self._out.append(P.encode(P.StateChanged(state="idle", job_id=command.id)))

    def poll(self, max_events: int = 500) -> list:
        if self._started is not None:
            due = (time.perf_counter() - self._started) * self.steps_per_s
            while self._script and self._script[0][0] <= due:
                self._out.extend(self._script.pop(0)[1])
        events = []
        while self._out and len(events) < max_events:
            events.append(self.P.decode_event(self._out.popleft()))
        self.events += len(events)
        return events

    def close(self, timeout: float = 5.0) -> None:
        self._alive = False

    def _run_script(self, run_dir: str, job_id: int) -> list[tuple[float, list[bytes]]]:
        """(due at step, encoded events) for the whole run, built before the clock starts;
        every event carries the StartRun's id, as the worker's do."""
        from xgblora_app.demo_engine import SMOLLM2_INFO
        from xgblora_engine.config import RunConfig

        P = self.P

        def enc(event) -> bytes:
            event.job_id = job_id
            return P.encode(event)

        rounds = -(-self.steps // self.kappa)
        script = [(0.0, [enc(P.StateChanged(state="training")),
                         enc(P.RunStarted(run_dir=run_dir, config=RunConfig(), model_info=SMOLLM2_INFO, data_report="flood",
                                          n_layers=30, total_steps=self.steps, total_rounds=rounds))])]
        for step in range(1, self.steps + 1):
            rnd = (step - 1) // self.kappa + 1
            layers = [(rnd * 7 + i * 3) % 30 for i in range(10)]
            chunk = [enc(P.StepMetrics(step=step, round=rnd, loss=3.0 / step ** 0.3, lr=1e-2, grad_norm=1.0,
                                       layers=layers, seconds=0.15, tokens=512, tokens_per_s=3400.0)),
                     enc(P.MemorySample(step=step, device="cpu", allocated=None, reserved=None, peak=None,
                                        rss=2**30 + step * 1000, predicted_peak=2 * 2**30))]
            if step % self.kappa == 0:
                chunk.append(enc(P.RoundMerged(round=rnd, step=step, layers=sorted(set(layers)), modules=70,
                                               booster_norm=0.01, merge_seconds=0.01, round_seconds=1.5)))
            if step % self.eval_every == 0:
                chunk.append(enc(P.EvalResult(step=step, round=rnd, eval_loss=2.5, n_tokens=4000)))
            script.append((float(step), chunk))
        script.append((float(self.steps), [enc(P.Finished(status="completed", run_dir=run_dir, steps=self.steps,
                                                           final_loss=1.0, final_eval_loss=2.5)),
                                           enc(P.StateChanged(state="idle"))]))
        return script


def measure(steps: int, rate: float) -> dict:
    import numpy as np
    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from xgblora_app.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    folder = Path(tempfile.mkdtemp(prefix="gui-latency-"))
    client = FloodClient(steps, REAL_STEPS_PER_S * rate)
    window = MainWindow(lambda: client, runs_folder=folder / "runs",
                        settings=QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    window.resize(1400, 900)
    window.show()
    _wait(app, lambda: window.bridge.state == "idle" and not window.bridge.busy and not window.bridge.queue)
    window.nav.setCurrentRow(4)  # the Train page: its plots are on screen
    draw_ms = _time_redraws(window.plots)
    drain_ms = _time_calls(window.bridge.timer, window.bridge.drain)
    status_ms = _time_calls(window.train_panel.status_timer, window.train_panel._show_latest)
    clock, gaps = QElapsedTimer(), []
    probe = QTimer()
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(lambda: gaps.append(clock.restart()))
    redraws = window.plots.redraws
    collections = _time_collections()
    load_before = os.getloadavg()
    with _timed_paints(type(window.plots.view)) as paint_ms:
        clock.start()
        probe.start()
        started = time.perf_counter()
        window.start()
        _wait(app, lambda: window.status.text().startswith("Run completed"), timeout=600)
        elapsed = time.perf_counter() - started
        probe.stop()
    gc.callbacks.remove(collections.callback)
    late = np.array(gaps[1:], dtype=float) - PROBE_MS
    drawn = window.plots.redraws - redraws
    window.close()
    return {
        "steps": steps, "rate_vs_real": rate, "events": client.events, "seconds": round(elapsed, 2),
        "events_per_s": round(client.events / elapsed, 1),
        "lateness_ms": _lateness(late),
        "goal_p99_ms": 16, "redraws": drawn, "redraws_per_s": round(drawn / elapsed, 1),
        "redraw_ms": _spread(draw_ms), "paint_ms": _spread(paint_ms), "drain_ms": _spread(drain_ms),
        "status_and_log_ms": _spread(status_ms),
        "gc_ms": {f"generation {g}": _spread(ms) for g, ms in collections.ms.items()},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform(),
                    "qt_platform": os.environ.get("QT_QPA_PLATFORM"), "load_before": load_before,
                    "load_after": os.getloadavg()},
    }


def _lateness(late) -> dict:
    """How late the probe's ticks came; none when the run ended within one tick (a short
    replay on a busy machine)."""
    import numpy as np

    if not len(late):
        return {"median": None, "p99": None, "max": None, "ticks": 0}
    return {"median": float(np.median(late)), "p99": float(np.percentile(late, 99)), "max": float(late.max()),
            "ticks": int(len(late))}


def start_up_seconds() -> tuple[float, bool]:
    """Seconds from a fresh interpreter's first import to a shown window, and whether
    torch or transformers got loaded on the way (they must not)."""
    code = ("import sys, time; t = time.perf_counter(); "
            "from xgblora_app.main_window import MainWindow; from PySide6.QtWidgets import QApplication; "
            "from benchmarks.gui_latency import FloodClient; app = QApplication([]); "
            "w = MainWindow(lambda: FloodClient(1, 1.0)); w.show(); app.processEvents(); "
            "print(time.perf_counter() - t, 'torch' in sys.modules or 'transformers' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": tempfile.mkdtemp(prefix="gui-latency-home-")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True, env=env)
    seconds, heavy = out.stdout.split()[-2:]
    return float(seconds), heavy == "True"


def _spread(ms: list[float]) -> dict | None:
    import numpy as np

    if not ms:
        return None
    return {"median": round(float(np.median(ms)), 2), "p99": round(float(np.percentile(ms, 99)), 2),
            "max": round(float(np.max(ms)), 2), "calls": len(ms)}


class _time_collections:
    """The garbage collector's pauses, by generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._t0 = 0.0
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.ms[info["generation"]].append((time.perf_counter() - self._t0) * 1000)


def _time_calls(timer, slot) -> list[float]:
    """Re-wires ``timer`` so each call of ``slot`` is timed (the bridge's drain, the status update)."""
    times: list[float] = []

    def timed() -> None:
        t0 = time.perf_counter()
        slot()
        times.append((time.perf_counter() - t0) * 1000)

    timer.timeout.disconnect()
    timer.timeout.connect(timed)
    return times


def _time_redraws(plots) -> list[float]:
    """Wraps the plots' refresh so each real redraw (the new data handed to the curves) is timed."""
    times: list[float] = []
    refresh = plots.refresh

    def timed(force: bool = False) -> None:
        before, t0 = plots.redraws, time.perf_counter()
        refresh(force)
        if plots.redraws != before:
            times.append((time.perf_counter() - t0) * 1000)

    plots.timer.timeout.disconnect()
    plots.timer.timeout.connect(timed)
    return times


@contextmanager
def _timed_paints(view_class):
    """Times every paint of the plots' view, the part of a redraw Qt does after ``refresh``
    (the view's class is patched for the measurement and restored after)."""
    times: list[float] = []
    paint = view_class.paintEvent

    def timed(self, event) -> None:
        t0 = time.perf_counter()
        paint(self, event)
        times.append((time.perf_counter() - t0) * 1000)

    view_class.paintEvent = timed
    try:
        yield times
    finally:
        view_class.paintEvent = paint


def _wait(app, condition, timeout: float = 10.0) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=100.0, help="times the event rate of a real run")
    parser.add_argument("--out", type=Path, default=RESULTS / "gui_latency.json")
    args = parser.parse_args()
    seconds, heavy = start_up_seconds()
    result = {"start_up_s": round(seconds, 2), "start_up_loads_torch": heavy, **measure(args.steps, args.rate)}
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
