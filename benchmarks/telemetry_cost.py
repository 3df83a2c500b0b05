"""What the live telemetry costs a training step.

Trains the embedded model through the worker's own ``emit`` (msgpack encoding, a
multiprocessing queue with a consumer draining it, a memory sample per step) and the
run folder's event and metrics logs, and times every one of those calls from inside
the run, so the figure is the share of each step spent on
telemetry, not a difference of two noisy wall-clock runs.

    python benchmarks/telemetry_cost.py [--model default] [--steps 20] [--batch 2] [--seq 128]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import threading
import time
from pathlib import Path

from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig
from xgblora_engine.session import run_training
from xgblora_engine.worker import Worker

RESULTS = Path(__file__).resolve().parent / "results"


class TimedWorker(Worker):
    def __init__(self, cmd_q, evt_q) -> None:
        super().__init__(cmd_q, evt_q)
        self.emit_seconds = 0.0
        self.step_seconds: list[float] = []
        self.per_step_emit: list[float] = []
        self._since_step = 0.0

    def emit(self, event) -> None:
        started = time.perf_counter()
        super().emit(event)
        spent = time.perf_counter() - started
        self.emit_seconds += spent
        self._since_step += spent
        if isinstance(event, P.StepMetrics):
            self.step_seconds.append(event.seconds)
            self.per_step_emit.append(self._since_step)
            self._since_step = 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--out", default="/tmp/xgblora-telemetry-run")
    args = ap.parse_args()
    cfg = RunConfig()
    cfg.model.name, cfg.model.device = args.model, args.device
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.eval_every = args.steps, args.batch, 0
    cfg.data.seq_len, cfg.boost.merge_every = args.seq, 5
    evt_q = mp.get_context("spawn").Queue()
    stop = threading.Event()

    def consume() -> None:  # the app's side: drain and decode
        while not stop.is_set():
            try:
                P.decode_event(evt_q.get(timeout=0.1))
            except Exception:  # noqa: BLE001 - queue.Empty
                pass

    threading.Thread(target=consume, daemon=True).start()
    worker = TimedWorker(None, evt_q)
    from xgblora_engine.rundir import RunDir

    original = RunDir.record_event

    def timed_record(self, event_dict) -> None:  # the JSONL logs are telemetry too
        started = time.perf_counter()
        original(self, event_dict)
        worker.emit_seconds += time.perf_counter() - started
        worker._since_step += time.perf_counter() - started

    RunDir.record_event = timed_record
    import shutil

    shutil.rmtree(args.out, ignore_errors=True)
    run_training(cfg, args.out, worker.emit)
    stop.set()
    share = [e / s for e, s in zip(worker.per_step_emit, worker.step_seconds)]
    result = {"model": args.model, "steps": args.steps, "batch": args.batch, "seq": args.seq,
              "median_step_s": statistics.median(worker.step_seconds),
              "median_emit_ms_per_step": 1000 * statistics.median(worker.per_step_emit),
              "median_share": statistics.median(share), "max_share": max(share)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "telemetry_cost.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
