"""The records carried inside protocol messages, and the words every status may take.

Each is a typed msgspec Struct, so a model's facts, a data report or a preflight check
cross the process boundary as checked fields, not as dicts read by string key. The
engine builds them where the facts are found (``models.loading`` makes the ModelInfo,
``data.dataset`` the DataReport, ``memory`` the checks and remedies, ``devices`` the
Devices); the app and the demo engine read the same types.

Imports nothing but the standard library and msgspec: the app imports this module.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# --- the words a status may take ----------------------------------------------------
# What the worker is doing; "idle" ends every job.
State = Literal["idle", "loading", "preflight", "training", "paused", "stopping", "exporting", "generating"]
Verdict = Literal["fits", "tight", "wont_fit"]
# user: a setting or file the user can fix; oom: out of memory; protocol: a malformed
# message; internal: a bug (with a traceback); crash and error: anything else
ErrorKind = Literal["error", "user", "oom", "crash", "protocol", "internal"]
FinishStatus = Literal["completed", "stopped", "failed"]
LogLevel = Literal["debug", "info", "warning", "error"]

# How the preflight, the CLI and the app say a verdict in a sentence.
VERDICT_WORDS: dict[str, str] = {"fits": "fits", "tight": "tight", "wont_fit": "will not fit"}
VERDICTS: tuple[str, ...] = Verdict.__args__


# GGUF tensor types an export offers (export.gguf, `xgblora export --quant`, the Export panel):
# llama.cpp's converter writes f16, bf16, q8_0 and f32; export.requant the 4- and 5-bit ones.
GGUF_TYPES = ("f16", "bf16", "q8_0", "q6_K", "q5_K_M", "q5_1", "q5_0", "q4_K_M", "q4_1", "q4_0", "f32")
K_QUANTS = ("q6_K", "q5_K_M", "q4_K_M")  # quantized by llama.cpp itself: need llama-cpp-python

class _Record(msgspec.Struct, kw_only=True):
    pass


# --- the machine and the model -------------------------------------------------------
class Device(_Record, kw_only=True):
    """One device a run may use, as the worker's Hello lists it."""

    device: str  # "cpu", "cuda:0"
    name: str
    total_bytes: int
    free_bytes: int | None = None
    bf16: bool = False  # whether dtype "auto" picks bf16 there
    compute_capability: str | None = None  # "8.9" on a GPU

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith("cuda")


class ModelInfo(_Record, kw_only=True):
    """What a loaded base model is: the Model panel, the run folder and the estimate read it."""

    name: str
    architecture: str  # config.model_type, e.g. "llama"
    n_layers: int
    hidden_size: int
    vocab_size: int
    n_params: int  # logical count: a packed 4-bit weight counts every value it holds
    dtype: str  # fp32 | bf16 | fp16: the compute dtype of the frozen base
    device: str  # where the batch goes: the device of the input embeddings
    quantization: str  # none | 4bit | 8bit
    weight_bytes: int  # parameters and buffers as stored
    layers_path: str = ""
    targets: list[str] = msgspec.field(default_factory=list)  # leaf names of the linears in a block
    devices: list[str] = msgspec.field(default_factory=list)  # every device holding weights, input first


# --- the data -------------------------------------------------------------------------
class PreviewExample(_Record, kw_only=True):
    """One training example as the model sees it: the text of its tokens (after
    truncation) and the character spans of the tokens that carry loss."""

    text: str
    spans: list[tuple[int, int]]  # [start, end) in text
    truncated: bool = False  # cut at seq_len: the end (often the end-of-turn token) is lost


class DataReport(_Record, kw_only=True):
    source: str
    format: str
    columns: dict[str, str]
    all_columns: list[str]
    n_rows: int
    n_train: int
    n_eval: int
    eval_source: str
    truncated: int  # training examples longer than seq_len
    dropped: int  # training examples with no learned token left after truncation
    eval_dropped: int
    token_mean: float
    token_p95: int
    token_max: int
    seq_len: int
    fallback_template: bool  # the tokenizer had no chat template: a plain one was used
    lengths: list[int] = msgspec.field(default_factory=list)  # tokens of each training example
    turns_cut: int = 0  # oldest messages removed from examples to fit seq_len
    tokens_cut: int = 0  # prompt tokens cut from their start
    preview: list[PreviewExample] = msgspec.field(default_factory=list)  # the first training examples


class ChatTurn(_Record, kw_only=True):
    role: str  # "user" or "assistant" (the system prompt travels on its own)
    content: str


class SampleAnswer(_Record, kw_only=True):
    """The model's greedy answer to one held-out prompt, against the data's own response."""

    prompt: str  # the last user turn (the whole rendered prompt is what the model saw)
    reference: str
    answer: str
    token_f1: float
    exact: bool


# --- memory ---------------------------------------------------------------------------
# A setting change, as RunSettings.update and config.update take it: {section: {key: value}}.
SettingChanges = dict[str, dict[str, int | float | bool | str | None]]


class Remedy(_Record, kw_only=True):
    label: str  # what to change, in words
    changes: SettingChanges
    saves_bytes: int


class DeviceCheck(_Record, kw_only=True):
    """The preflight of one device holding weights."""

    device: str
    predicted_peak: int
    available: int
    verdict: Verdict
    parts: dict[str, int]  # bytes per part of the estimate (weights, optimizer, activations...)
    measured_peak: int | None = None  # None when no trial was run


# --- export ----------------------------------------------------------------------------
class ExportCheck(msgspec.Struct):
    """One verification of an export; positional, as the export code builds many."""

    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False  # could not run here (e.g. the runtime is not installed); not a failure
