import json
import subprocess
import sys
import types
import typing

import msgspec
import pytest

from xgblora_engine import protocol as P

SAMPLE_VALUES = {int: 3, float: 0.5, str: "x", bool: True}


def sample(cls):
    """An instance of cls with every field (optional ones too) set from its annotation."""
    return cls(**{f.name: _value(f.type) for f in msgspec.structs.fields(cls)})


def _value(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _value(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is list:
        return [_value(typing.get_args(tp)[0])]
    if origin is dict:
        return {"k": _value(typing.get_args(tp)[1])}
    if tp is typing.Any:  # what configs and reports hold: nested plain data
        return [1, 2.5, "s", None, {"nested": True}]
    return SAMPLE_VALUES[tp]


def envelope(msg: dict, v: int = P.PROTOCOL_VERSION) -> bytes:
    return msgspec.msgpack.encode({"v": v, "msg": msg})


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
    assert P.StartRun(config={}).id == 0
    before = P.Hello(version=1, pid=1).t
    assert 0 < before <= P.LogLine(level="info", text="x").t


def test_messages_of_an_older_worker_without_device_lists_still_decode():
    hello = P.decode_event(envelope({"type": "Hello", "version": 1, "pid": 7}))
    assert hello.devices == []
    old_preflight = {k: v for k, v in P.to_dict(sample(P.PreflightResult)).items() if k != "devices"}
    assert P.decode_event(envelope(old_preflight)).devices == []
    assert P.from_dict(old_preflight).devices == []  # an old run's events.jsonl


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
    with pytest.raises(P.ProtocolError, match=r"Expected `bool`, got `str` - at `\$.msg.checkpoint`"):
        P.decode_command(envelope({"type": "Stop", "checkpoint": "yes"}))


@pytest.mark.parametrize("v", [0, 2])
def test_other_protocol_version_is_rejected_naming_both(v):
    data = envelope({"type": "SomethingNew", "x": 1}, v=v)  # unknown tags of a newer peer too
    for decode in (P.decode_event, P.decode_command):
        with pytest.raises(P.ProtocolError, match=f"protocol version {v} received, this side speaks 1"):
            decode(data)


def test_only_plain_data_is_sent():
    with pytest.raises(P.ProtocolError, match="not a protocol message"):
        P.encode({"type": "Hello", "version": 1, "pid": 1})
    with pytest.raises(P.ProtocolError, match="cannot send StartRun: .*unsupported"):
        P.encode(P.StartRun(config={"model": object()}))


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
