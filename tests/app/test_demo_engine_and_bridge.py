"""The scripted engine keeps the real client's contract, and the bridge turns it into
one-job-at-a-time commands and Qt signals."""

from xgblora_app.demo_engine import DemoEngine
from xgblora_app.engine_bridge import EngineBridge
from xgblora_app.engine_client import EngineClient
from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig


def small_config(steps=10, kappa=5):
    cfg = RunConfig()
    cfg.train.max_steps, cfg.boost.merge_every = steps, kappa
    return cfg


def drain(client):
    events = []
    while batch := client.poll():
        events += batch
    return events


def test_fake_speaks_the_contract(tmp_path):
    client = DemoEngine(runs_root=tmp_path, steps_per_poll=None)
    assert isinstance(client, EngineClient)
    client.start()
    assert isinstance(client.poll()[0], P.Hello)
    client.send(P.StartRun(config=small_config(), id=1))
    client.send(P.Estimate(config=small_config(), id=2))  # refused: one job at a time
    events = drain(client)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("StepMetrics") == 10 and kinds.count("RoundMerged") == 2
    assert isinstance(events[-1], P.StateChanged) and events[-1].state == "idle"
    busy = [e for e in events if isinstance(e, P.Error)]
    assert busy[0].job_id == 2 and busy[0].kind == "user"
    finished = next(e for e in events if isinstance(e, P.Finished))
    assert finished.status == "completed" and (tmp_path / finished.run_dir.split("/")[-1] / "events.jsonl").exists()


def test_fake_pause_holds_and_stop_finishes_as_stopped():
    client = DemoEngine(steps_per_poll=2)
    client.start()
    client.poll()
    client.send(P.StartRun(config=small_config(steps=50)))
    client.poll()
    client.send(P.Pause())
    held = [e for _ in range(3) for e in client.poll()]
    assert [e.state for e in held if isinstance(e, P.StateChanged)] == ["paused"]
    assert not any(isinstance(e, P.StepMetrics) for e in held)
    client.send(P.Stop())
    events = drain(client)
    finished = next(e for e in events if isinstance(e, P.Finished))
    assert finished.status == "stopped" and finished.steps < 50


def test_fake_death_is_reported_once():
    client = DemoEngine()
    client.start()
    client.poll()
    client.die()
    assert not client.is_alive()
    assert [type(e) for e in client.poll()] == [P.WorkerExited]
    assert client.poll() == []


def test_bridge_sends_jobs_one_at_a_time_and_controls_at_once(qtbot):
    client = DemoEngine(steps_per_poll=1)
    bridge = EngineBridge(lambda: client)
    bridge.start()
    qtbot.waitUntil(lambda: bridge.state == "idle", timeout=2000)
    first = bridge.submit(P.StartRun(config=small_config(steps=30)))
    second = bridge.submit(P.Estimate(config=small_config()))
    assert client.sent_types() == ["StartRun"] and bridge.current_job.id == first
    bridge.control(P.Pause())
    assert client.sent_types() == ["StartRun", "Pause"]  # not queued behind the job
    bridge.control(P.Stop())
    qtbot.waitUntil(lambda: bridge.current_job is not None and bridge.current_job.id == second, timeout=3000)
    assert client.sent_types() == ["StartRun", "Pause", "Stop", "Estimate"]
    bridge.close()


def test_bridge_signals_each_event_and_survives_a_death(qtbot):
    client = DemoEngine(steps_per_poll=None)
    bridge = EngineBridge(lambda: client)
    seen = []
    bridge.step_metrics.connect(seen.append)
    bridge.start()
    bridge.submit(P.StartRun(config=small_config(steps=4, kappa=2)))
    bridge.submit(P.Estimate(config=small_config()))
    qtbot.waitUntil(lambda: len(seen) == 4, timeout=2000)
    client.die()
    with qtbot.waitSignal(bridge.worker_exited, timeout=2000):
        pass
    assert bridge.state == "dead" and not bridge.queue and bridge.current_job is None
    bridge.start()  # a new worker
    qtbot.waitUntil(lambda: bridge.state == "idle", timeout=2000)
    assert client.starts == 2
    bridge.close()


def test_bridge_drops_superseded_queued_jobs(qtbot):
    client = DemoEngine(steps_per_poll=1)
    bridge = EngineBridge(lambda: client)
    bridge.start()
    qtbot.waitUntil(lambda: bridge.state == "idle", timeout=2000)
    bridge.submit(P.StartRun(config=small_config(steps=20)))
    bridge.submit(P.Inspect(model="a"))
    bridge.drop_queued(lambda c: isinstance(c, P.Inspect))
    bridge.submit(P.Inspect(model="b"))
    assert [c.model for c in bridge.queue] == ["b"]
    bridge.close()
