import subprocess
import sys
import typing

import msgspec
import pytest

from xgblora_engine import protocol as P

SAMPLE_VALUES = {int: 3, float: 0.5, str: "x", bool: True}


def sample(cls):
    """An instance of cls with every required field filled from its annotation."""
    kwargs = {}
    for f in msgspec.structs.fields(cls):
        if f.required:
            kwargs[f.name] = _value(f.type)
    return cls(**kwargs)


def _value(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _value(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is list:
        return [_value(typing.get_args(tp)[0])]
    if origin is dict:
        return {"k": 1}
    return SAMPLE_VALUES[tp]


@pytest.mark.parametrize("cls", P.COMMAND_TYPES, ids=lambda c: c.__name__)
def test_every_command_round_trips(cls):
    msg = sample(cls)
    assert P.decode_command(P.encode(msg)) == msg


@pytest.mark.parametrize("cls", P.EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_round_trips_bytes_and_dicts(cls):
    msg = sample(cls)
    assert P.decode_event(P.encode(msg)) == msg
    assert P.from_dict(P.to_dict(msg)) == msg
    assert P.to_dict(msg)["type"] == cls.__name__


def test_commands_and_events_do_not_cross():
    with pytest.raises(P.ProtocolError, match="malformed command"):
        P.decode_command(P.encode(sample(P.Hello)))


@pytest.mark.parametrize("data, match", [
    (b"\xc1garbage", "malformed event"),
    (msgspec.msgpack.encode({"v": 1, "msg": {"type": "Nope"}}), "malformed event"),
    (msgspec.msgpack.encode({"v": 1, "msg": {"type": "Hello", "version": "one", "pid": 1}}), r"Expected `int`"),
    (msgspec.msgpack.encode({"v": 1, "msg": {"type": "Hello", "pid": 1}}), "missing required field `version`"),
    (msgspec.msgpack.encode({"v": 2, "msg": {"type": "Hello", "version": 2, "pid": 1}}), "version 2 received, this side speaks 1"),
])
def test_bad_messages_are_rejected_readably(data, match):
    with pytest.raises(P.ProtocolError, match=match):
        P.decode_event(data)


def test_non_messages_are_not_encoded():
    with pytest.raises(P.ProtocolError):
        P.encode({"type": "Hello"})


def test_protocol_imports_no_heavy_or_qt_module():
    code = "import sys, xgblora_engine.protocol; print(' '.join(sys.modules))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not {"torch", "transformers", "PySide6", "numpy"} & loaded
