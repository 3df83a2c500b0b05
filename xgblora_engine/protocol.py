"""The only things that cross the app ⇄ worker process boundary.

Commands go from the app to the worker, events come back. Every message is a typed
msgspec Struct tagged with its class name (the ``"type"`` key on the wire) and wrapped
in a versioned envelope, so a malformed or foreign message is rejected with a readable
``ProtocolError`` instead of crashing either side. Messages hold plain data only
(dict, list, str, float, int, bool, None): anything else fails at ``encode``, in the
process that made it, not in the one that receives it.

Imports nothing but the standard library and msgspec, because the app, which never
loads torch, imports this module (and ``payloads`` and ``config``, which load none either).

Every event carries the ``job_id`` of the command that caused it (0: none, e.g. Hello),
so a panel keeps the events of its own jobs without guessing from what is in flight.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from xgblora_engine.config import RunConfig
from xgblora_engine.payloads import (
    ChatTurn,
    DataReport,
    Device,
    DeviceCheck,
    ErrorKind,
    ExportCheck,
    FinishStatus,
    LogLevel,
    ModelInfo,
    PreviewExample,
    Remedy,
    SampleAnswer,
    State,
    Verdict,
)

# 2: typed payloads, job ids on events, the export command as its own field
# 3: SampleAnswers (answers to held-out prompts at every evaluation); conversations, sampling
#    and streamed GenerationChunks for Generate
# 4: DownloadProgress (a Hub model fetched before it loads)
PROTOCOL_VERSION = 4
# Older envelopes still decode: their payloads have the same field names, and every
# field added since has a default.
READABLE_VERSIONS = (1, 2, 3, 4)

__all__ = [
    "PROTOCOL_VERSION", "READABLE_VERSIONS", "ProtocolError", "Command", "Event", "COMMAND_TYPES",
    "EVENT_TYPES", "JOB_COMMANDS", "CONTROL_COMMANDS",
    # the records inside messages (defined in payloads)
    "DataReport", "Device", "DeviceCheck", "ExportCheck", "ModelInfo", "PreviewExample", "Remedy",
    "SampleAnswer", "ChatTurn",
    "encode", "decode_command", "decode_event", "to_dict", "from_dict",
    # commands
    "StartRun", "ResumeRun", "Pause", "Resume", "Stop", "Estimate", "Export",
    "Generate", "Inspect", "Shutdown",
    # events ("Warning" is reachable as protocol.Warning but left out here so that a star
    # import does not shadow the builtin)
    "Hello", "StateChanged", "RunStarted", "StepMetrics", "RoundMerged", "RoundRolledBack",
    "EvalResult", "SampleAnswers", "MemorySample", "PreflightResult", "CheckpointSaved", "LogLine",
    "WarningEvent", "Error", "ExportProgress", "ExportDone", "GenerationChunk", "GenerationResult",
    "InspectResult", "Finished", "WorkerExited", "DownloadProgress",
]


class ProtocolError(ValueError):
    """A message that is not a valid message of this protocol version."""


class _Message(msgspec.Struct, tag=True, kw_only=True):
    """Subclasses inherit the tag (their class name); ``kw_only`` is per class, so each repeats it."""


# --- commands (app -> worker) ------------------------------------------------
class _Command(_Message, kw_only=True):
    id: int = 0  # echoed as the job_id of every event the command causes


class StartRun(_Command, kw_only=True):
    config: RunConfig
    run_dir: str | None = None
    force: bool = False  # train even when the preflight says it will not fit
    stop_after: int | None = None  # stop (as the Stop command does) after this many steps
    memory_limit_bytes: int | None = None  # preflight against this, as Estimate does


class ResumeRun(_Command, kw_only=True):
    run_dir: str
    force: bool = False
    stop_after: int | None = None
    memory_limit_bytes: int | None = None


class Pause(_Command, kw_only=True):
    pass


class Resume(_Command, kw_only=True):
    pass


class Stop(_Command, kw_only=True):
    """Stops after the current optimizer step; the last round boundary's checkpoint stays."""


class Estimate(_Command, kw_only=True):
    config: RunConfig
    trial: bool = True  # also measure a few real steps, not only the analytic estimate
    memory_limit_bytes: int | None = None  # treat this as the usable memory (shared GPUs, tests)


class Export(_Command, kw_only=True):
    run_dir: str
    out: str | None = None  # the exact folder to create; None: a new folder in ``into``
    into: str | None = None  # where new export folders go; None: RUN/exports
    ollama_name: str | None = None  # None: named after the run
    formats: list[str] = msgspec.field(default_factory=lambda: ["hf"])
    dtype: str = "auto"
    quant: str | None = None
    verify: bool = True
    push_to: str | None = None  # a Hub repository to upload the verified exports to
    public: bool = False  # the repository is private unless this is set


class Generate(_Command, kw_only=True):
    """An answer to ``prompt`` after the earlier turns of ``history``, streamed as
    GenerationChunks and ended by a GenerationResult; a Stop ends it early."""

    model: str
    prompt: str
    max_new_tokens: int = 128
    run_dir: str | None = None  # generate with this run's merged model instead of the base
    system: str | None = None
    history: list[ChatTurn] = msgspec.field(default_factory=list)  # the conversation before ``prompt``
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


class Inspect(_Command, kw_only=True):
    model: str | None = None
    data: str | None = None
    config: RunConfig | None = None


class Shutdown(_Command, kw_only=True):
    pass


# --- events (worker -> app) --------------------------------------------------
class _Event(_Message, kw_only=True):
    t: float = msgspec.field(default_factory=time.time)  # when it happened, for plots and logs
    job_id: int = 0  # the id of the command that caused it; 0 for none


class Hello(_Event, kw_only=True):
    """First event from a worker: the app checks the version before sending anything."""

    version: int
    pid: int
    # what the machine offers: xgblora_engine.devices.list_devices() (empty from older workers)
    devices: list[Device] = msgspec.field(default_factory=list)


class StateChanged(_Event, kw_only=True):
    state: State
    detail: str = ""


class RunStarted(_Event, kw_only=True):
    run_dir: str
    config: RunConfig
    model_info: ModelInfo
    data_report: str  # DataReport.describe()
    n_layers: int
    total_steps: int
    total_rounds: int
    start_step: int = 0  # > 0 for a resumed run


class StepMetrics(_Event, kw_only=True):
    step: int
    round: int
    loss: float
    lr: float
    grad_norm: float
    layers: list[int]
    seconds: float
    tokens: int
    tokens_per_s: float


class RoundMerged(_Event, kw_only=True):
    round: int
    step: int
    layers: list[int]
    modules: int
    booster_norm: float
    merge_seconds: float
    round_seconds: float
    update_multiple: float = 1.0  # the multiple of the round's update merged (boost.line_search)


class RoundRolledBack(_Event, kw_only=True):
    round: int
    step: int
    reason: str
    retry_lr_factor: float | None  # None: no retry, the run stops


class EvalResult(_Event, kw_only=True):
    step: int
    round: int
    eval_loss: float
    n_tokens: int  # target tokens the loss is averaged over


class SampleAnswers(_Event, kw_only=True):
    """Greedy answers to the same held-out prompts at every evaluation (step 0: the base
    model's), scored against the data's responses."""

    step: int
    round: int
    answers: list[SampleAnswer]
    token_f1: float  # mean over the answers
    exact_match: float  # share of answers equal to their reference
    seconds: float  # what answering cost, beside the training time


class MemorySample(_Event, kw_only=True):
    """All sizes in bytes; the device allocator figures are None on CPU."""

    step: int
    device: str
    allocated: int | None
    reserved: int | None
    peak: int | None
    rss: int
    predicted_peak: int | None = None  # drawn beside the measured memory


class PreflightResult(_Event, kw_only=True):
    verdict: Verdict
    predicted_peak: int
    available: int
    parts: dict[str, int]  # bytes per part of the estimate (weights, optimizer, activations...)
    measured_peak: int | None  # None when no trial was run
    remedies: list[Remedy]
    device: str  # with several devices: the tightest one, whose figures are the ones above
    message: str
    # one per device holding weights; several when the model is sharded over GPUs
    devices: list[DeviceCheck] = msgspec.field(default_factory=list)


class CheckpointSaved(_Event, kw_only=True):
    step: int
    round: int
    path: str


class LogLine(_Event, kw_only=True):
    level: LogLevel
    text: str


class Warning(_Event, kw_only=True):
    """Something the user should know that does not stop the work.

    Named ``Warning`` because the class name is the wire tag; it shadows the builtin only
    inside this module, which never uses the builtin. Import it as ``WarningEvent``.
    """

    message: str
    hint: str = ""


WarningEvent = Warning


class Error(_Event, kw_only=True):
    message: str  # one sentence for the user
    hint: str = ""  # what to do about it
    kind: ErrorKind = "error"
    detail: str = ""  # a traceback for "internal", shown folded


class DownloadProgress(_Event, kw_only=True):
    """A Hub model being fetched before it loads (a Stop cancels; what is done is kept)."""

    repo_id: str
    done_bytes: int
    total_bytes: int  # grows while the file list is read; 0 until then
    bytes_per_s: float


class ExportProgress(_Event, kw_only=True):
    format: str
    stage: str
    fraction: float


class ExportDone(_Event, kw_only=True):
    format: str
    path: str
    ok: bool
    checks: list[ExportCheck]
    message: str = ""
    command: str = ""  # what the user runs next (ollama create …), if anything


class GenerationChunk(_Event, kw_only=True):
    """The next piece of an answer being generated."""

    text: str


class GenerationResult(_Event, kw_only=True):
    model: str
    prompt: str
    text: str
    tokens: int
    seconds: float
    stopped: bool  # ended at an end-of-turn token rather than the length limit
    first_token_s: float | None = None  # until the first new token
    interrupted: bool = False  # a Stop ended it


class InspectResult(_Event, kw_only=True):
    model_info: ModelInfo | None = None
    data_report: DataReport | None = None


class Finished(_Event, kw_only=True):
    status: FinishStatus
    run_dir: str | None
    steps: int
    final_loss: float | None
    final_eval_loss: float | None
    message: str = ""


class WorkerExited(_Event, kw_only=True):
    """Made by the client, not the worker: the worker process is gone (crash, OOM kill)."""

    exitcode: int | None
    signal: str | None  # e.g. "SIGKILL"
    message: str


Command = StartRun | ResumeRun | Pause | Resume | Stop | Estimate | Export | Generate | Inspect | Shutdown
Event = (Hello | StateChanged | RunStarted | StepMetrics | RoundMerged | RoundRolledBack
         | EvalResult | SampleAnswers | MemorySample | PreflightResult | CheckpointSaved | LogLine | Warning | Error
         | ExportProgress | ExportDone | GenerationChunk | GenerationResult | InspectResult | Finished | WorkerExited
         | DownloadProgress)
COMMAND_TYPES: tuple[type, ...] = Command.__args__
EVENT_TYPES: tuple[type, ...] = Event.__args__
# Commands that occupy the worker until it reports "idle" again; it runs one at a time.
JOB_COMMANDS: tuple[type, ...] = (StartRun, ResumeRun, Estimate, Export, Generate, Inspect)
# Commands the worker acts on at once, even in the middle of a job.
CONTROL_COMMANDS: tuple[type, ...] = (Pause, Resume, Stop)


# --- the boundary -------------------------------------------------------------
class _CommandEnvelope(msgspec.Struct):
    v: int
    msg: Command


class _EventEnvelope(msgspec.Struct):
    v: int
    msg: Event


class _VersionOnly(msgspec.Struct):
    """Reads just the envelope's version; msgspec skips the message without building it."""

    v: int | None = None


_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(_CommandEnvelope)
_event_decoder = msgspec.msgpack.Decoder(_EventEnvelope)
_version_decoder = msgspec.msgpack.Decoder(_VersionOnly)


def encode(msg: Command | Event) -> bytes:
    if not isinstance(msg, COMMAND_TYPES + EVENT_TYPES):
        raise ProtocolError(f"{type(msg).__name__} is not a protocol message")
    try:
        return _encoder.encode({"v": PROTOCOL_VERSION, "msg": msg})
    except TypeError as exc:  # e.g. a tensor or a Path where plain data belongs
        raise ProtocolError(f"cannot send {type(msg).__name__}: {exc}") from None


def decode_command(data: bytes) -> Command:
    return _decode(data, _command_decoder, "command")


def decode_event(data: bytes) -> Event:
    return _decode(data, _event_decoder, "event")


def _decode(data: bytes, decoder: msgspec.msgpack.Decoder, what: str):
    _check_version(data)
    try:
        return decoder.decode(data).msg
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"malformed {what}: {exc}") from None


def _check_version(data: bytes) -> None:
    """Checked first, so a newer peer's unknown message is reported as a version clash."""
    try:
        version = _version_decoder.decode(data).v
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # not an envelope: the full decode reports it as malformed
    if version is not None and version not in READABLE_VERSIONS:
        raise ProtocolError(
            f"protocol version {version!r} received, this side speaks {PROTOCOL_VERSION}")


# --- the run's event log -------------------------------------------------------
def to_dict(msg: Command | Event) -> dict[str, Any]:
    """Plain dict with a "type" key (the tag): one line of a run's events.jsonl."""
    return msgspec.to_builtins(msg)


def from_dict(d: dict[str, Any]) -> Event:
    """Reads back a ``to_dict`` record, e.g. to redraw a finished run's plots."""
    try:
        return msgspec.convert(d, Event)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"malformed event record: {exc}") from None
