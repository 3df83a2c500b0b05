"""The real worker process: commands in, events out, and faults survived."""

import copy
import json
import time

import msgspec
import pytest
import torch

from xgblora_engine import protocol as P
from xgblora_engine.boosting.ledger import BoosterLedger
from xgblora_engine.session import run_training
from xgblora_engine.worker import WorkerClient


@pytest.fixture
def client():
    c = WorkerClient()
    c.start()
    yield c
    c.close()


def wait_for(client, predicate, timeout=120.0):
    """Events until one matches; returns (match, events seen). Events polled after the
    match stay queued on the client for the next call."""
    backlog = client.__dict__.setdefault("backlog", [])
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        backlog.extend(client.poll())
        while backlog:
            event = backlog.pop(0)
            seen.append(event)
            if predicate(event):
                return event, seen
        time.sleep(0.02)
    raise AssertionError(f"timed out; last events: {[type(e).__name__ for e in seen[-10:]]}")


def is_a(kind):
    return lambda e: isinstance(e, kind)


def test_worker_greets_and_rejects_malformed_commands(client):
    hello, _ = wait_for(client, is_a(P.Hello))
    assert hello.version == P.PROTOCOL_VERSION
    client.cmd_q.put(b"\x93not a command")
    client.cmd_q.put(msgspec.msgpack.encode({"v": 1, "msg": {"type": "Launch"}}))
    errors = [wait_for(client, is_a(P.Error))[0] for _ in range(2)]
    assert all(e.kind == "protocol" for e in errors) and "Launch" in errors[1].message
    client.send(P.Inspect(data="sample", id=9))  # still serving
    result, _ = wait_for(client, is_a(P.InspectResult))
    assert result.data_report.format == "alpaca" and result.job_id == 9
    first = result.data_report.preview[0]  # rendered with the tokenizer's template, replies marked
    assert first.spans and "<|im_start|>assistant" in first.text[: first.spans[0][0]]


def test_worker_hello_lists_the_devices_of_this_machine(client):
    hello, _ = wait_for(client, is_a(P.Hello))
    expected = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert [d.device for d in hello.devices] == expected  # ["cpu"] on the CPU-only test machine
    assert hello.devices[0].total_bytes >= hello.devices[0].free_bytes > 0


def test_run_with_pause_resume_and_stop(client, tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg.train.max_steps = 400
    client.send(P.StartRun(config=cfg, run_dir=str(tmp_path / "run")))
    wait_for(client, lambda e: isinstance(e, P.StepMetrics) and e.step >= 3)
    client.send(P.Pause())
    wait_for(client, lambda e: isinstance(e, P.StateChanged) and e.state == "paused")
    time.sleep(0.3)  # the step in flight when Pause arrived may still report
    client.poll()
    client.backlog.clear()
    time.sleep(0.5)
    assert not [e for e in client.poll() if isinstance(e, P.StepMetrics)], "no steps while paused"
    client.send(P.Resume())
    wait_for(client, is_a(P.StepMetrics))
    client.send(P.Stop())
    finished, seen = wait_for(client, is_a(P.Finished))
    assert finished.status == "stopped" and finished.steps < 400
    assert any(isinstance(e, P.MemorySample) and e.rss > 0 for e in seen)


def test_sigkill_is_noticed_and_the_run_resumes_to_the_same_result(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg.train.max_steps = 60
    reference = run_training(copy.deepcopy(cfg), str(tmp_path / "reference"), lambda e: None).path

    first = WorkerClient()
    first.start()
    try:
        first.send(P.StartRun(config=cfg, run_dir=str(tmp_path / "run")))
        wait_for(first, lambda e: isinstance(e, P.CheckpointSaved) and e.step >= 6)
        first.kill()
        killed_at = time.monotonic()
        exited, _ = wait_for(first, is_a(P.WorkerExited), timeout=5)
        assert time.monotonic() - killed_at < 1.0
        assert exited.signal == "SIGKILL" and "resume" in exited.message
    finally:
        first.close()

    second = WorkerClient()
    second.start()
    try:
        second.send(P.ResumeRun(run_dir=str(tmp_path / "run")))
        finished, seen = wait_for(second, is_a(P.Finished))
    finally:
        second.close()
    assert finished.status == "completed" and finished.steps == 60
    assert next(e for e in seen if isinstance(e, P.RunStarted)).start_step >= 6
    a = BoosterLedger.load(reference / "ledger.safetensors")
    b = BoosterLedger.load(tmp_path / "run" / "ledger.safetensors")
    assert a.rounds == b.rounds
    assert all(torch.equal(x.B, y.B) and torch.equal(x.A, y.A) for x, y in zip(a.entries, b.entries))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, 61))


def test_user_errors_come_back_as_events_and_the_worker_lives_on(client, tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg.data.path = str(tmp_path / "missing.jsonl")
    client.send(P.StartRun(config=cfg, run_dir=str(tmp_path / "run"), id=7))
    error, _ = wait_for(client, is_a(P.Error))
    assert error.kind == "user" and error.job_id == 7 and "data file not found" in error.message
    client.send(P.Estimate(config=tiny_config, trial=True))
    result, _ = wait_for(client, is_a(P.PreflightResult))
    assert result.verdict == "fits" and result.measured_peak > 0 and result.parts["weights"] > 0


def test_out_of_memory_in_a_step_is_reported_and_the_run_stays_resumable(tiny_config, tmp_path, monkeypatch):
    """A CPU stand-in for CUDA OOM: the step raises torch.OutOfMemoryError mid-run."""
    import queue

    from xgblora_engine.boosting import trainer as trainer_module
    from xgblora_engine.worker import Worker

    real, calls = trainer_module.summed_loss, {"n": 0}

    def exhausting(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # step 5, the first of round 3
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, batch)

    monkeypatch.setattr(trainer_module, "summed_loss", exhausting)
    events_q = queue.Queue()
    worker = Worker(queue.Queue(), events_q)
    cfg = copy.deepcopy(tiny_config)
    worker.run_command(P.StartRun(config=cfg, run_dir=str(tmp_path / "run"), id=3))
    events = [P.decode_event(events_q.get()) for _ in range(events_q.qsize())]
    error = next(e for e in events if isinstance(e, P.Error))
    assert error.kind == "oom" and error.job_id == 3
    assert error.message.startswith("out of memory during step 5") and "gradient checkpointing" in error.hint
    assert events[-1].status == "failed"
    monkeypatch.setattr(trainer_module, "summed_loss", real)
    from xgblora_engine.session import resume_training

    resumed = []
    resume_training(str(tmp_path / "run"), resumed.append)
    assert resumed[-1].status == "completed" and resumed[-1].steps == 6


def test_export_and_generate_through_the_worker(client, tiny_config, tmp_path):
    from xgblora_engine.session import run_training

    run = run_training(copy.deepcopy(tiny_config), str(tmp_path / "run"), lambda e: None).path
    client.send(P.Export(run_dir=str(run), out=str(tmp_path / "export"), formats=["hf", "peft"], verify=True))
    done = [wait_for(client, is_a(P.ExportDone))[0] for _ in range(2)]
    assert {d.format for d in done} == {"hf", "peft"}
    assert all(d.checks for d in done), done
    client.send(P.Generate(model=str(tiny_config.model.name), prompt="w1 w2", max_new_tokens=5, run_dir=str(run),
                           history=[P.ChatTurn(role="user", content="w3"), P.ChatTurn(role="assistant", content="w4")],
                           temperature=0.8, seed=1))
    result, seen = wait_for(client, is_a(P.GenerationResult))
    assert result.tokens <= 5 and result.model == str(run) and not result.interrupted
    chunks = [e.text for e in seen if isinstance(e, P.GenerationChunk)]
    assert "".join(chunks) == result.text and all(e.job_id == result.job_id for e in seen[-len(chunks) - 1:])
    client.send(P.Generate(model=str(tiny_config.model.name), prompt="w1 w2", max_new_tokens=5, top_p=0))
    error, _ = wait_for(client, is_a(P.Error))
    assert error.kind == "user" and "invalid top-p 0" in error.message
