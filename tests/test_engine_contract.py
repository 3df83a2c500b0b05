"""The demo engine and the real worker answer the same script of commands with the same
events: the same event types per command, each with the same fields holding values of
the same types (set or unset alike), every event stamped with its command's id.

Slow: the real worker is a process that loads torch and trains a tiny model.
"""

import copy
import json
import time

import msgspec
import pytest

from tests.conftest import build_tiny_llama
from tests.engine.conftest import save_tiny_model
from xgblora_app.demo_engine import DemoEngine
from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig
from xgblora_engine.worker import WorkerClient

pytestmark = pytest.mark.slow

# What each engine may say in its own words: log lines and warnings depend on the model
# and the data (the demo loads neither), the rest must match.
FREE_FORM = (P.LogLine, P.Warning)


def script(cfg, tmp_path, name: str) -> list[P.Command]:
    run_dir = tmp_path / name / "run"
    return [
        P.Inspect(id=1, model=cfg.model.name, data=cfg.data.path, config=copy.deepcopy(cfg)),
        P.Estimate(id=2, config=copy.deepcopy(cfg), trial=True, memory_limit_bytes=100 * 2**20),  # will not fit
        P.StartRun(id=3, config=copy.deepcopy(cfg), run_dir=str(run_dir)),
        P.Export(id=4, run_dir=str(run_dir), out=str(tmp_path / name / "export"), formats=["hf"]),
    ]


def answers(client, commands: list[P.Command], timeout: float = 600.0) -> dict[int, list[P.Event]]:
    """The events of each command, from its sending to its StateChanged("idle")."""
    client.start()
    deadline = time.monotonic() + timeout
    events = _until(client, lambda e: isinstance(e, P.Hello), deadline)
    assert events[-1].version == P.PROTOCOL_VERSION
    out = {}
    for command in commands:
        client.send(command)
        out[command.id] = _until(client, lambda e: isinstance(e, P.StateChanged) and e.state == "idle", deadline)
    client.close()
    return out


def _until(client, done, deadline: float) -> list[P.Event]:
    events = []
    while time.monotonic() < deadline:
        batch = client.poll()
        for event in batch:
            assert not isinstance(event, (P.Error, P.WorkerExited)), event
            events.append(event)
            if done(event):
                return events
        if not batch:
            time.sleep(0.02)
    raise TimeoutError(f"no end after {[type(e).__name__ for e in events]}")


def shape(value, in_mapping: bool = False):
    """A value's structure without its content: field names and leaf types, None kept.
    Mappings hold values of several types (a remedy's setting changes), so their leaves
    are only said to be there."""
    if isinstance(value, msgspec.Struct):
        return {f: shape(getattr(value, f)) for f in value.__struct_fields__ if f != "t"}
    if isinstance(value, (list, tuple)):
        return [shape(value[0], in_mapping)] if value else []
    if isinstance(value, dict):
        return {"*": shape(next(iter(value.values())), in_mapping=True)} if value else {}
    if value is None:
        return None
    return "value" if in_mapping else type(value).__name__


def by_type(events: list[P.Event]) -> dict[str, object]:
    """The shape of the first event of each type (free-form ones left out)."""
    shapes: dict[str, object] = {}
    for event in events:
        if not isinstance(event, FREE_FORM):
            shapes.setdefault(type(event).__name__, shape(event))
    return shapes


def tiny_run(tmp_path) -> RunConfig:
    """Two rounds of two steps on a tiny model, two of its four layers a round."""
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"w{i} w{i + 1} w{i + 2}", "output": f"w{i % 9}"})
                              for i in range(40)))
    cfg = RunConfig()
    cfg.model.name = str(save_tiny_model(tmp_path / "tiny", build_tiny_llama()))
    cfg.data.path, cfg.data.seq_len = str(data), 32
    cfg.boost.rank, cfg.boost.merge_every, cfg.boost.layers_per_round = 2, 2, 2
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.eval_every = 4, 2, 2
    return cfg


def test_the_demo_engine_speaks_like_the_real_worker(tmp_path):
    cfg = tiny_run(tmp_path)
    real = answers(WorkerClient(), script(cfg, tmp_path, "real"))
    demo = answers(DemoEngine(steps_per_poll=None), script(cfg, tmp_path, "demo"))
    for job_id in real:
        assert all(e.job_id == job_id for e in real[job_id] + demo[job_id])
        real_shapes, demo_shapes = by_type(real[job_id]), by_type(demo[job_id])
        assert list(real_shapes) == list(demo_shapes), (job_id, list(real_shapes), list(demo_shapes))
        for name, expected in real_shapes.items():
            assert demo_shapes[name] == expected, (job_id, name)
    verdicts = [next(e for e in answers_[2] if isinstance(e, P.PreflightResult)) for answers_ in (real, demo)]
    assert [v.verdict for v in verdicts] == ["wont_fit", "wont_fit"] and all(v.remedies for v in verdicts)
