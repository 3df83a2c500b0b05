"""The engine worker process and the client that drives it.

    client ── Command bytes ──► cmd queue ──► worker: a reader thread + the main loop
    client ◄── Event bytes ──── evt queue ◄──  (training runs in the worker's main thread)

Only protocol messages cross. The reader thread turns Pause/Resume/Stop into flags the
training loop checks between optimizer steps; everything else is queued for the main
loop. ``multiprocessing.Queue.put`` hands bytes to a feeder thread, so emitting an event
never waits on the consumer.

Importing this module loads no torch: the app imports it to start workers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Iterator

from xgblora_engine import protocol as P
from xgblora_engine.control import RunControl

SPAWN = mp.get_context("spawn")


# --- the worker side --------------------------------------------------------------
class ThreadControl(RunControl):
    """Flags set by the command reader thread, read by the training loop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()

    def should_stop(self, step: int) -> bool:
        return self.stop.is_set()

    def wait_if_paused(self) -> None:
        while not self.running.wait(0.2):
            if self.stop.is_set():
                return


class Worker:
    def __init__(self, cmd_q, evt_q) -> None:
        self.cmd_q, self.evt_q = cmd_q, evt_q
        self.pending: queue.Queue = queue.Queue()
        self.control = ThreadControl()
        self.busy = threading.Event()
        self.job_id = 0  # the job being run: its events carry this id
        self.last_step = 0
        self.peak_rss = 0
        self.run_dir: str | None = None

    def emit(self, event) -> None:
        """Send an event, stamped with the job that caused it unless it names one."""
        if not event.job_id:
            event.job_id = self.job_id
        if isinstance(event, P.StepMetrics):
            self.last_step = event.step
        elif isinstance(event, P.MemorySample):
            self.peak_rss = max(self.peak_rss, event.rss)
        self.evt_q.put(P.encode(event))

    # reader thread: control commands act at once, the rest wait for the main loop
    def read_commands(self) -> None:
        while True:
            data = self.cmd_q.get()
            try:
                cmd = P.decode_command(data)
            except P.ProtocolError as exc:
                self.emit(P.Error(message=f"rejected a malformed command: {exc}", kind="protocol"))
                continue
            if isinstance(cmd, P.Pause):
                self.control.running.clear()
                self.emit(P.StateChanged(state="paused", detail="paused after the current optimizer step"))
            elif isinstance(cmd, P.Resume):
                self.control.running.set()
                self.emit(P.StateChanged(state="training"))
            elif isinstance(cmd, P.Stop):
                self.control.stop.set()
                self.control.running.set()
                self.emit(P.StateChanged(state="stopping", detail="stopping after the current optimizer step"))
            elif isinstance(cmd, P.Shutdown):
                self.control.stop.set()
                self.control.running.set()
                self.pending.put(cmd)
                return
            elif self.busy.is_set():
                self.emit(P.Error(message=f"the engine is busy; {type(cmd).__name__} was not run",
                                  hint="wait until the current job finishes or stop it", kind="user", job_id=cmd.id))
            else:
                # The job's control is made here, by the thread that also handles Stop: a Stop
                # read after this job is aimed at it, however soon, and one aimed at the last
                # job cannot leak into it.
                self.busy.set()
                self.control = ThreadControl()
                self.pending.put(cmd)

    def serve(self) -> None:
        from xgblora_engine.devices import list_devices

        # Listing the devices imports torch (about a second), which every job needs anyway.
        self.emit(P.Hello(version=P.PROTOCOL_VERSION, pid=os.getpid(), devices=list_devices()))
        threading.Thread(target=self.read_commands, daemon=True).start()
        while True:
            cmd = self.pending.get()
            if isinstance(cmd, P.Shutdown):
                return
            try:
                self.run_command(cmd)
            finally:
                self.emit(P.StateChanged(state="idle"))
                self.job_id = 0
                self.busy.clear()

    def run_command(self, cmd) -> None:
        from xgblora_engine.diskspace import is_disk_full
        from xgblora_engine.errors import UserError

        self.job_id = cmd.id
        oom = None
        try:
            handler = getattr(self, f"do_{type(cmd).__name__}", None)
            if handler is None:
                raise UserError(f"{type(cmd).__name__} is not supported by this engine", "update the app and the engine together")
            try:
                handler(cmd)
            except Exception as exc:
                if is_disk_full(exc):
                    raise self._disk_full(cmd, exc) from None
                raise
        except UserError as exc:
            self.emit(P.Error(message=exc.message, hint=exc.hint, kind="user"))
            self._fail_run(exc.message)
        except Exception as exc:  # noqa: BLE001 - the worker must outlive any job
            if not _is_oom(exc):
                self.emit(P.Error(message=f"internal error: {exc}", hint="this is a bug; the run's last checkpoint is intact",
                                  kind="internal", detail=traceback.format_exc()))
                self._fail_run(str(exc))
            oom = str(exc).splitlines()[0] if _is_oom(exc) else None
        if oom is not None:  # outside the except block: the traceback no longer pins the step's tensors
            self._report_oom(cmd, oom)

    def _disk_full(self, cmd, exc: Exception):
        """A full disk that no job code reported: named by the file it hit, else the job's folder."""
        from pathlib import Path

        from xgblora_engine.diskspace import MIN_HEADROOM, disk_full_error

        filename = getattr(exc, "filename", None)
        folder = Path(filename).parent if filename else (getattr(cmd, "out", None) or self.run_dir
                                                          or getattr(cmd, "run_dir", None) or ".")
        return disk_full_error(folder, MIN_HEADROOM, "run the same command again")

    def _fail_run(self, message: str) -> None:
        if self.run_dir:
            self.emit(P.Finished(status="failed", run_dir=self.run_dir, steps=self.last_step, final_loss=None,
                                 final_eval_loss=None, message=message))
            self.run_dir = None

    def _report_oom(self, cmd, detail: str) -> None:
        import gc

        import torch

        from xgblora_engine import memory

        cuda = torch.cuda.is_available()
        peak = torch.cuda.max_memory_reserved() if cuda else self.peak_rss
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.emit(P.Error(message=f"out of memory during step {self.last_step + 1} (peak {memory.human_bytes(peak)})",
                          hint="lower the batch size (with more gradient accumulation), shorten sequences, "
                               "enable gradient checkpointing or load the base in 4-bit; then resume the run",
                          kind="oom", detail=detail))
        self._fail_run("out of memory")

    # --- jobs ---------------------------------------------------------------
    def _options(self, cmd):
        from xgblora_engine.session import Options

        return Options(force=cmd.force, stop_after=cmd.stop_after, memory_limit=cmd.memory_limit_bytes)

    def _watch_run_dir(self, event) -> None:
        if isinstance(event, P.RunStarted):
            self.run_dir = event.run_dir
        elif isinstance(event, P.Finished):
            self.run_dir = None
        self.emit(event)

    def do_StartRun(self, cmd: P.StartRun) -> None:
        from xgblora_engine.session import run_training

        run_training(cmd.config, cmd.run_dir, self._watch_run_dir, self.control, self._options(cmd))

    def do_ResumeRun(self, cmd: P.ResumeRun) -> None:
        from xgblora_engine.session import resume_training

        resume_training(cmd.run_dir, self._watch_run_dir, self.control, self._options(cmd))

    def do_Estimate(self, cmd: P.Estimate) -> None:
        from xgblora_engine.session import preflight, prepare, stop_asked

        cfg = cmd.config
        self.emit(P.StateChanged(state="preflight"))
        prepared = prepare(cfg, self.emit, stop_asked(self.control))
        self.emit(preflight(prepared, cfg, cmd.memory_limit_bytes, cmd.trial))

    def do_Export(self, cmd: P.Export) -> None:
        from xgblora_engine.export.run import export_run

        self.emit(P.StateChanged(state="exporting", detail=f"exporting {', '.join(cmd.formats)}"))

        def progress(fmt: str, stage: str, fraction: float) -> None:
            self.emit(P.ExportProgress(format=fmt, stage=stage, fraction=fraction))

        results = export_run(cmd.run_dir, cmd.out, cmd.formats, cmd.dtype, cmd.quant, cmd.verify, progress,
                             log=lambda text: self.emit(P.LogLine(level="info", text=text)),
                             into=cmd.into, ollama_name=cmd.ollama_name, push_to=cmd.push_to, public=cmd.public)
        for result in results:
            self.emit(result.to_event())

    def do_Generate(self, cmd: P.Generate) -> None:
        from xgblora_engine.export.chat import Sampling, generate

        sampling = Sampling(cmd.max_new_tokens, cmd.temperature, cmd.top_p, cmd.seed).validate()
        self.emit(P.StateChanged(state="generating"))
        model = cmd.run_dir or cmd.model
        turns = [{"role": t.role, "content": t.content} for t in cmd.history] + [{"role": "user", "content": cmd.prompt}]
        control = self.control
        reply = generate(model, turns, sampling, cmd.system, should_stop=control.stop.is_set,
                         on_text=lambda text: self.emit(P.GenerationChunk(text=text)))
        self.emit(P.GenerationResult(model=model, prompt=cmd.prompt, text=reply.text, tokens=reply.tokens,
                                     seconds=reply.seconds, stopped=reply.stopped, first_token_s=reply.first_token_s,
                                     interrupted=reply.finish == "stopped"))

    def do_Inspect(self, cmd: P.Inspect) -> None:
        from xgblora_engine.config import RunConfig

        cfg = cmd.config or RunConfig()
        model_info = data_report = None
        if cmd.model:
            from xgblora_engine.models.loading import model_info as read_model_info

            cfg.model.name = cmd.model
            model_info = read_model_info(cfg.model, run=cfg)
        if cmd.data:
            from xgblora_engine.data.dataset import prepare_data
            from xgblora_engine.models.loading import load_tokenizer

            cfg.data.path = cmd.data
            cfg.validate()
            data_report = prepare_data(cfg.data, load_tokenizer(cfg.model), cfg.train.seed).report.to_payload()
        self.emit(P.InspectResult(model_info=model_info, data_report=data_report))


def _is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _exit_with_parent(parent: int) -> None:
    """The worker has its own process group, so nothing kills it when the app dies:
    it watches for that itself. Checkpoints are on disk, so exiting at once is safe."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def own_process_group() -> bool:
    """POSIX: a session and process group of its own, so the client can end the worker and
    anything it started in one signal. Windows has neither (the child is ended by handle)."""
    if not hasattr(os, "setsid"):
        return False
    try:
        os.setsid()
    except OSError:  # already a group leader
        return False
    return True


def end_process(process, force: bool) -> None:
    """Terminate (or kill) the worker: its whole process group on POSIX, the process elsewhere."""
    if hasattr(os, "killpg"):
        try:
            os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
            return
        except (ProcessLookupError, PermissionError):
            pass
    if force:
        process.kill()
    else:
        process.terminate()


def worker_main(cmd_q, evt_q) -> None:
    """Entry point of the worker process."""
    own_process_group()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the client's to handle
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    Worker(cmd_q, evt_q).serve()
    evt_q.close()
    evt_q.join_thread()


# --- the client side ----------------------------------------------------------
class WorkerClient:
    """Starts and drives one worker process; no Qt, no torch."""

    def __init__(self) -> None:
        self.process = None
        self._exit_reported = False
        self.last_step = 0
        self.peak_rss = 0

    def start(self) -> None:
        self.cmd_q, self.evt_q = SPAWN.Queue(), SPAWN.Queue()
        self.process = SPAWN.Process(target=worker_main, args=(self.cmd_q, self.evt_q), name="xgblora-worker")
        self.process.start()
        self._exit_reported = False

    def send(self, command) -> None:
        self.cmd_q.put(P.encode(command))

    def is_alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def poll(self, max_events: int = 500) -> list:
        events = []
        while len(events) < max_events:
            try:
                data = self.evt_q.get_nowait()
            except queue.Empty:
                break
            try:
                event = P.decode_event(data)
            except P.ProtocolError as exc:
                event = P.Error(message=f"rejected a malformed event: {exc}", kind="protocol")
            self._track(event)
            events.append(event)
        if not events and self.process is not None and not self.process.is_alive() and not self._exit_reported:
            self._exit_reported = True
            events.append(self._exit_event())
        return events

    def events(self, poll_interval: float = 0.05) -> Iterator:
        """Blocking iteration over events until the worker is gone."""
        while True:
            batch = self.poll()
            yield from batch
            if any(isinstance(e, P.WorkerExited) for e in batch):
                return
            if not batch:
                time.sleep(poll_interval)

    def _track(self, event) -> None:
        if isinstance(event, P.StepMetrics):
            self.last_step = event.step
        elif isinstance(event, P.MemorySample):
            self.peak_rss = max(self.peak_rss, event.rss)

    def _exit_event(self) -> P.WorkerExited:
        code = self.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            likely = " — most likely the system ran out of memory and killed it" if name == "SIGKILL" else ""
            from xgblora_engine.memory.units import human_bytes

            message = (f"the engine process was killed by {name} at step {self.last_step} "
                       f"(peak RSS {human_bytes(self.peak_rss)}){likely}; the last checkpoint is intact, resume the run")
            return P.WorkerExited(exitcode=code, signal=name, message=message)
        if code == 0:
            return P.WorkerExited(exitcode=0, signal=None, message="the engine process exited")
        return P.WorkerExited(exitcode=code, signal=None,
                              message=f"the engine process crashed (exit code {code}); the last checkpoint is intact")

    def close(self, timeout: float = 5.0) -> None:
        """Shutdown command, then a join, then termination of the worker's process group."""
        if self.process is None:
            return
        if self.process.is_alive():
            try:
                self.send(P.Shutdown())
            except (OSError, ValueError):
                pass
            self.process.join(timeout)
        for force in (False, True):
            if not self.process.is_alive():
                break
            end_process(self.process, force)
            self.process.join(2.0)
        self.cmd_q.close()
        self.evt_q.close()
        self.evt_q.cancel_join_thread()

    def kill(self) -> None:
        """SIGKILL the worker (tests, and a last resort)."""
        if self.process is not None and self.process.is_alive():
            self.process.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
