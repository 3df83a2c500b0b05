"""The GUI latency benchmark's replayed run keeps the engine client's contract."""

from benchmarks.gui_latency import FloodClient
from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig


def test_the_flood_client_replays_a_whole_run_as_a_worker_would():
    client = FloodClient(steps=30, steps_per_s=1e9, kappa=10, eval_every=15)
    client.start()
    assert [type(e) for e in client.poll()] == [P.Hello]
    client.send(P.StartRun(config=RunConfig(), run_dir="r", id=7))
    events = client.poll(10_000)
    assert {e.job_id for e in events} == {7}  # the Train panel only listens to its own job
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["StateChanged", "RunStarted"] and kinds[-2:] == ["Finished", "StateChanged"]
    assert kinds.count("StepMetrics") == kinds.count("MemorySample") == 30
    assert kinds.count("RoundMerged") == 3 and kinds.count("EvalResult") == 2
    assert events[-1].state == "idle" and client.events == len(events) + 1


def test_the_flood_client_holds_back_steps_that_are_not_due_yet():
    client = FloodClient(steps=1000, steps_per_s=1e-3)
    client.start()
    client.poll()
    client.send(P.StartRun(config=RunConfig(), run_dir="r"))
    assert [type(e).__name__ for e in client.poll()] == ["StateChanged", "RunStarted"]


def test_the_benchmark_measures_a_whole_replayed_run_in_the_real_window(qapp):
    from benchmarks.gui_latency import measure

    # 60 steps at 10× the real rate last about a second: long enough for the 5 ms probe to
    # tick even on a busy machine (at 100× the whole replay can fit between two ticks)
    result = measure(steps=60, rate=10)
    assert result["events"] >= 2 * 60 and result["lateness_ms"]["ticks"] > 0
    assert result["redraws"] >= 1
