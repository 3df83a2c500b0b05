import dataclasses
import json
import subprocess
import sys
import types
import typing

import msgspec
import pytest

from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig

SAMPLE_VALUES = {int: 3, float: 0.5, str: "x", bool: True}


def sample(cls):
    """An instance of cls with every field (optional ones too) set from its annotation."""
    return cls(**{f.name: _value(f.type) for f in msgspec.structs.fields(cls)})


def _value(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _value(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is typing.Literal:
        return typing.get_args(tp)[-1]
    if origin is list:
        return [_value(typing.get_args(tp)[0])]
    if origin is tuple:
        return tuple(_value(a) for a in typing.get_args(tp))
    if origin is dict:
        return {"k": _value(typing.get_args(tp)[1])}
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return sample(tp)
    if dataclasses.is_dataclass(tp):
        return tp()
    return SAMPLE_VALUES[tp]


def _types_in(tp) -> typing.Iterator:
    """tp and every type nested in it: union members, list items, struct and dataclass fields."""
    yield tp
    for arg in typing.get_args(tp):
        if typing.get_origin(tp) is not typing.Literal:
            yield from _types_in(arg)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        for f in msgspec.structs.fields(tp):
            yield from _types_in(f.type)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        for f in dataclasses.fields(tp):
            yield from _types_in(typing.get_type_hints(tp)[f.name])


def envelope(msg: dict, v: int = P.PROTOCOL_VERSION) -> bytes:
    return msgspec.msgpack.encode({"v": v, "msg": msg})


def test_every_field_is_typed_down_to_its_leaves():
    """No payload crosses as untyped data (Any, a bare dict or list)."""
    for cls in P.COMMAND_TYPES + P.EVENT_TYPES:
        for tp in _types_in(cls):
            assert tp is not typing.Any and tp not in (dict, list, object), (cls.__name__, tp)


def test_job_and_control_commands_are_two_disjoint_sets():
    assert not set(P.JOB_COMMANDS) & set(P.CONTROL_COMMANDS)
    assert set(P.JOB_COMMANDS) | set(P.CONTROL_COMMANDS) | {P.Shutdown} == set(P.COMMAND_TYPES)


def test_unions_and_names_agree():
    for cls in P.COMMAND_TYPES + P.EVENT_TYPES:
        assert msgspec.structs.fields(cls)  # every message has at least id or t
        assert cls.__struct_config__.tag == cls.__name__
    assert {f.name for f in msgspec.structs.fields(P.Pause)} == {"id"}
    assert P.WarningEvent is P.Warning
    assert set(P.__all__) <= set(dir(P))


@pytest.mark.parametrize("cls", P.COMMAND_TYPES, ids=lambda c: c.__name__)
def test_every_command_round_trips(cls):
    msg = sample(cls)
    assert P.decode_command(P.encode(msg)) == msg
    if not _required(cls):
        assert P.decode_command(P.encode(cls())) == cls()


@pytest.mark.parametrize("cls", P.EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_round_trips_bytes_and_log_lines(cls):
    msg = sample(cls)
    assert P.decode_event(P.encode(msg)) == msg
    record = P.to_dict(msg)
    assert record["type"] == cls.__name__
    assert P.from_dict(json.loads(json.dumps(record))) == msg


def _required(cls):
    return [f.name for f in msgspec.structs.fields(cls) if f.required]


def test_defaults():
    assert P.Export(run_dir="r", out="o").formats == ["hf"]
    assert P.Export(run_dir="r", out="o").formats is not P.Export(run_dir="r", out="o").formats
    assert P.StartRun(config=RunConfig()).id == 0
    assert P.LogLine(level="info", text="x").job_id == 0
    before = P.Hello(version=1, pid=1).t
    assert 0 < before <= P.LogLine(level="info", text="x").t


def test_messages_of_an_older_worker_without_device_lists_still_decode():
    hello = P.decode_event(envelope({"type": "Hello", "version": 1, "pid": 7}))
    assert hello.devices == []
    old_preflight = {k: v for k, v in P.to_dict(sample(P.PreflightResult)).items() if k != "devices"}
    assert P.decode_event(envelope(old_preflight)).devices == []
    assert P.from_dict(old_preflight).devices == []  # an old run's events.jsonl


def test_messages_of_protocol_version_1_still_decode():
    """Version 1 sent payloads as dicts of the same names, no job ids, the export command
    inside the message and a Stop with a checkpoint flag."""
    v1 = [{"type": "Error", "message": "m", "kind": "user", "command_id": 4},
          {"type": "ExportDone", "format": "ollama", "path": "p", "ok": True, "message": "ok\nollama create x",
           "checks": [{"name": "reloads", "ok": True, "detail": ""}]},
          {"type": "InspectResult", "data_report": {**P.to_dict(sample(P.DataReport)), "describe": "data: x"}},
          {"type": "RunStarted", "run_dir": "r", "config": {"train": {"lr": 0.002}}, "data_report": "d",
           "model_info": P.to_dict(sample(P.ModelInfo)), "n_layers": 30, "total_steps": 10, "total_rounds": 1}]
    error, export, inspect, started = (P.decode_event(envelope(m, v=1)) for m in v1)
    assert error.kind == "user" and error.job_id == 0
    assert export.checks[0].name == "reloads" and export.command == ""
    assert inspect.data_report.preview == [P.PreviewExample(text="x", spans=[(3, 3)], truncated=True)]
    assert started.config.train.lr == 0.002 and started.config.boost == RunConfig().boost
    stop = P.decode_command(envelope({"type": "Stop", "id": 2, "checkpoint": True}, v=1))
    assert stop == P.Stop(id=2)
    assert P.from_dict(v1[0]).message == "m"  # an old run's events.jsonl


def test_statuses_take_only_their_words():
    with pytest.raises(P.ProtocolError, match=r"Invalid enum value 'napping' - at `\$.msg.state`"):
        P.decode_event(envelope({"type": "StateChanged", "state": "napping"}))
    with pytest.raises(P.ProtocolError, match=r"Invalid enum value 'maybe' - at `\$.msg.verdict`"):
        P.decode_event(envelope({**P.to_dict(sample(P.PreflightResult)), "verdict": "maybe"}))


def test_a_newer_peer_s_extra_fields_are_ignored():
    hello = P.decode_event(envelope({"type": "Hello", "version": 1, "pid": 7, "gpus_in_use": [0]}))
    assert hello.pid == 7


def test_fields_are_keyword_only():
    with pytest.raises(TypeError):
        P.Hello(1, 2)


def test_commands_and_events_do_not_cross():
    with pytest.raises(P.ProtocolError, match="malformed command: Invalid value 'Hello'"):
        P.decode_command(P.encode(sample(P.Hello)))
    with pytest.raises(P.ProtocolError, match="malformed event: Invalid value 'Pause'"):
        P.decode_event(P.encode(P.Pause()))


@pytest.mark.parametrize("data, match", [
    (b"", "malformed event: Input data was truncated"),
    (b"\xc1garbage", "malformed event: MessagePack data is malformed"),
    (msgspec.msgpack.encode([1, 2]), "Expected `object`, got `array`"),
    (msgspec.msgpack.encode({"msg": {"type": "Hello", "version": 1, "pid": 1}}), "missing required field `v`"),
    (envelope({"type": "Nope"}), r"Invalid value 'Nope' - at `\$.msg.type`"),
    (envelope({"version": 1, "pid": 1}), "missing required field `type`"),
    (envelope({"type": "Hello", "version": "one", "pid": 1}), r"Expected `int`, got `str` - at `\$.msg.version`"),
    (envelope({"type": "Hello", "pid": 1}), "missing required field `version`"),
    (envelope({"type": "StepMetrics", **P.to_dict(sample(P.StepMetrics)), "layers": "0,1"}),
     r"Expected `array`, got `str` - at `\$.msg.layers`"),
])
def test_bad_events_are_rejected_readably(data, match):
    with pytest.raises(P.ProtocolError, match=match):
        P.decode_event(data)


def test_bad_command_field_type_is_rejected_readably():
    with pytest.raises(P.ProtocolError, match=r"Expected `bool`, got `str` - at `\$.msg.verify`"):
        P.decode_command(envelope({"type": "Export", "run_dir": "r", "out": "o", "verify": "yes"}))
    with pytest.raises(P.ProtocolError, match=r"Expected `int`, got `str` - at `\$.msg.config.train.max_steps`"):
        P.decode_command(envelope({"type": "StartRun", "config": {"train": {"max_steps": "many"}}}))


@pytest.mark.parametrize("v", [0, P.PROTOCOL_VERSION + 1])
def test_other_protocol_version_is_rejected_naming_both(v):
    data = envelope({"type": "SomethingNew", "x": 1}, v=v)  # unknown tags of a newer peer too
    for decode in (P.decode_event, P.decode_command):
        with pytest.raises(P.ProtocolError, match=f"protocol version {v} received, this side speaks {P.PROTOCOL_VERSION}"):
            decode(data)


def test_only_plain_data_is_sent():
    with pytest.raises(P.ProtocolError, match="not a protocol message"):
        P.encode({"type": "Hello", "version": 1, "pid": 1})
    with pytest.raises(P.ProtocolError, match="cannot send StartRun: .*unsupported"):
        cfg = RunConfig()
        cfg.model.name = object()
        P.encode(P.StartRun(config=cfg))


def test_bad_log_records_are_rejected_readably():
    with pytest.raises(P.ProtocolError, match=r"malformed event record: .*`\$.loss`"):
        P.from_dict({**P.to_dict(sample(P.StepMetrics)), "loss": "low"})
    with pytest.raises(P.ProtocolError, match="Invalid value 'Pause'"):
        P.from_dict(P.to_dict(P.Pause()))


def test_nan_loss_survives_the_log():
    """A diverged step logs loss=NaN; the stdlib json writer keeps it, so the record reads back."""
    msg = sample(P.StepMetrics)
    msg.loss = float("nan")
    again = P.from_dict(json.loads(json.dumps(P.to_dict(msg))))
    assert again.loss != again.loss and again.step == msg.step


def test_protocol_imports_no_heavy_or_qt_module():
    code = "import sys, xgblora_engine.protocol; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {name.split(".")[0] for name in out.split()}
    assert "xgblora_engine" in loaded
    assert not loaded & {"torch", "transformers", "PySide6", "PySide2", "PyQt5", "PyQt6",
                         "shiboken6", "pyqtgraph"}
