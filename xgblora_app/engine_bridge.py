"""The Qt side of the engine boundary: drains ``EngineClient.poll()`` on a timer and
re-emits every event as a Qt signal, in the GUI thread.

Panels never talk to the client directly. They ``submit`` job commands, which the
bridge queues and sends one at a time (the worker refuses a job while another runs),
and send Pause/Resume/Stop with ``control``, which go out at once.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from xgblora_app.engine_client import ClientFactory, EngineClient
from xgblora_engine import protocol as P
from xgblora_engine.payloads import Device

# event type -> name of the bridge signal that carries it
SIGNAL_OF: dict[type, str] = {
    P.Hello: "hello", P.StateChanged: "state_changed", P.RunStarted: "run_started",
    P.StepMetrics: "step_metrics", P.RoundMerged: "round_merged", P.RoundRolledBack: "round_rolled_back",
    P.EvalResult: "eval_result", P.SampleAnswers: "sample_answers", P.MemorySample: "memory_sample", P.PreflightResult: "preflight_result",
    P.CheckpointSaved: "checkpoint_saved", P.LogLine: "log_line", P.Warning: "warning", P.Error: "error",
    P.ExportProgress: "export_progress", P.ExportDone: "export_done", P.GenerationChunk: "generation_chunk",
    P.GenerationResult: "generation_result", P.DownloadProgress: "download_progress",
    P.InspectResult: "inspect_result", P.Finished: "finished", P.WorkerExited: "worker_exited",
}


class EngineBridge(QObject):
    hello = Signal(object)
    state_changed = Signal(object)
    run_started = Signal(object)
    step_metrics = Signal(object)
    round_merged = Signal(object)
    round_rolled_back = Signal(object)
    eval_result = Signal(object)
    sample_answers = Signal(object)
    memory_sample = Signal(object)
    preflight_result = Signal(object)
    checkpoint_saved = Signal(object)
    log_line = Signal(object)
    warning = Signal(object)
    error = Signal(object)
    export_progress = Signal(object)
    download_progress = Signal(object)
    export_done = Signal(object)
    generation_chunk = Signal(object)
    generation_result = Signal(object)
    inspect_result = Signal(object)
    finished = Signal(object)
    worker_exited = Signal(object)
    event = Signal(object)  # every event, after its own signal
    engine_state = Signal(str)  # starting | idle | a worker state | dead
    sent = Signal(object)  # every command as it goes out (the log view shows them)
    jobs_changed = Signal()  # a job was queued, sent or dropped

    def __init__(self, factory: ClientFactory, interval_ms: int = 30, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.factory = factory
        self.client: EngineClient | None = None
        self.state = "stopped"
        self.devices: list[Device] = []  # what the worker's Hello listed (panels built later read it here)
        self.current_job: P.Command | None = None  # the job sent and not yet finished
        self.queue: deque[P.Command] = deque()
        self._ids = itertools.count(1)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.drain)

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        """Spawn a worker (again, after a death); events flow once it says Hello."""
        if self.client is not None and self.client.is_alive():
            return
        self.client = self.factory()
        self.current_job = None
        self._set_state("starting")
        self.client.start()
        self.timer.start()

    def close(self, timeout: float = 5.0) -> None:
        self.timer.stop()
        if self.client is not None:
            self.client.close(timeout)
        self._set_state("stopped")

    @property
    def ready(self) -> bool:
        return self.state not in ("starting", "stopped", "dead")

    @property
    def busy(self) -> bool:
        return self.current_job is not None

    # --- commands -------------------------------------------------------------------
    def submit(self, command: P.Command) -> int:
        """Queue a job command; it is sent when the worker is idle. Returns its id."""
        assert isinstance(command, P.JOB_COMMANDS), command
        command.id = next(self._ids)
        self.queue.append(command)
        self.jobs_changed.emit()
        self._pump()
        return command.id

    def control(self, command: P.Command) -> int:
        """Pause, Resume, Stop: sent at once."""
        assert isinstance(command, P.CONTROL_COMMANDS), command
        command.id = next(self._ids)
        self._send(command)
        return command.id

    def drop_queued(self, match: Callable[[P.Command], bool]) -> None:
        """Forget queued jobs that ``match`` (a newer request replaces them)."""
        self.queue = deque(c for c in self.queue if not match(c))
        self.jobs_changed.emit()

    def _pump(self) -> None:
        if self.state == "idle" and self.current_job is None and self.queue:
            self.current_job = self.queue.popleft()
            self._send(self.current_job)
            self.jobs_changed.emit()

    def _send(self, command: P.Command) -> None:
        if self.client is None or not self.client.is_alive():
            return
        self.client.send(command)
        self.sent.emit(command)

    # --- events ---------------------------------------------------------------------
    def drain(self) -> None:
        if self.client is None:
            return
        for event in self.client.poll(500):
            self.dispatch(event)

    def dispatch(self, event: P.Event) -> None:
        if isinstance(event, P.Hello):
            self.devices = list(event.devices)
            self._set_state("idle")
        elif isinstance(event, P.StateChanged):
            self._set_state(event.state)
        elif isinstance(event, P.WorkerExited):
            self.timer.stop()
            self.current_job = None
            self.queue.clear()
            self.jobs_changed.emit()
            self._set_state("dead")
        getattr(self, SIGNAL_OF[type(event)]).emit(event)
        self.event.emit(event)
        if isinstance(event, P.StateChanged) and event.state == "idle" and self.current_job is not None:
            self.current_job = None
            self.jobs_changed.emit()
        if self.state == "idle":
            self._pump()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.engine_state.emit(state)
