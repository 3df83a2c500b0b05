"""A Stop sent at any moment of a job's start reaches that job, and never the next one."""

import queue
import random
import threading
import time

from xgblora_engine import protocol as P
from xgblora_engine import worker as W


class Events:
    def __init__(self):
        self.items = queue.Queue()

    def put(self, data):
        self.items.put(P.decode_event(data))

    def until_idle(self, timeout=300.0):  # generous: a loaded machine, not a measurement
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.items.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(event, P.StateChanged) and event.state == "idle":
                return
        raise AssertionError("the job never ended")


class SlowToMake(W.ThreadControl):
    """A control object that takes a moment to build, widening the start of every job."""

    def __init__(self):
        time.sleep(random.uniform(0, 0.004))
        super().__init__()


def start_worker(monkeypatch, outcomes):
    monkeypatch.setattr(W, "ThreadControl", SlowToMake)
    monkeypatch.setattr("xgblora_engine.devices.list_devices", lambda: [])
    cmd_q, events = queue.Queue(), Events()
    worker = W.Worker(cmd_q, events)

    def job(cmd):  # a run of 200 short steps that checks for Stop between them
        for step in range(200):
            if worker.control.should_stop(step):
                outcomes.append("stopped")
                return
            time.sleep(0.01)
        outcomes.append("completed")

    worker.do_StartRun = job
    threading.Thread(target=worker.serve, daemon=True).start()
    return cmd_q, events


def test_a_stop_at_any_moment_of_a_jobs_start_is_kept(monkeypatch):
    outcomes = []
    cmd_q, events = start_worker(monkeypatch, outcomes)
    random.seed(0)
    for _ in range(40):
        cmd_q.put(P.encode(P.StartRun(config={})))
        time.sleep(random.choice([0, 0, random.uniform(0, 0.006)]))
        cmd_q.put(P.encode(P.Stop()))
        events.until_idle()
    assert outcomes == ["stopped"] * 40


def test_a_stop_aimed_at_the_last_job_does_not_stop_the_next(monkeypatch):
    outcomes = []
    cmd_q, events = start_worker(monkeypatch, outcomes)
    cmd_q.put(P.encode(P.Stop()))  # nothing runs: aimed at no job
    cmd_q.put(P.encode(P.StartRun(config={})))
    time.sleep(0.2)
    cmd_q.put(P.encode(P.Stop()))
    events.until_idle()
    assert outcomes == ["stopped"]
    cmd_q.put(P.encode(P.StartRun(config={})))
    events.until_idle()
    assert outcomes == ["stopped", "completed"]
