"""Detect a dataset's format and turn each row into a conversation (or plain text).

Formats: alpaca (instruction / input / output), chat (a list of role/content messages,
or ShareGPT's from/value), prompt/completion, and plain text. A column mapping
overrides detection: its keys are the canonical field names below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from xgblora_engine.errors import UserError

# canonical field -> column names recognised for it, in order of preference. Each format
# resolves its own fields, so 'response' can be alpaca's output or prompt/completion's
# completion depending on what else the data has.
ALIASES: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "conversations", "conversation", "dialog"),
    "instruction": ("instruction", "question", "query", "task"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "target"),
    "prompt": ("prompt",),
    "completion": ("completion", "response"),
    "text": ("text", "content", "document"),
    "system": ("system", "system_prompt"),
}
REQUIRED = {"chat": ("messages",), "alpaca": ("instruction", "output"),
            "prompt_completion": ("prompt", "completion"), "text": ("text",)}
OPTIONAL = {"chat": (), "alpaca": ("input", "system"), "prompt_completion": ("system",), "text": ()}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                  "assistant": "assistant", "model": "assistant", "bot": "assistant", "system": "system"}

Conversation = list[dict[str, str]] | str


@dataclass
class FormatReport:
    format: str
    columns: dict[str, str]  # canonical field -> column in the data
    n_rows: int
    all_columns: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """E.g. "alpaca format: instruction='question', input=(none), output='answer'; 400 rows"."""
        fields = sorted(REQUIRED[self.format] + OPTIONAL[self.format], key=list(ALIASES).index)
        shown = ", ".join(f"{f}='{self.columns[f]}'" if f in self.columns else f"{f}=(none)" for f in fields)
        return f"{self.format} format: {shown}; {self.n_rows} rows"


def detect_format(rows: list[dict[str, Any]], format: str = "auto",
                  columns: dict[str, str] | None = None) -> FormatReport:
    """Which format the rows are in and which column holds each field.

    ``columns`` (canonical field -> column) wins over the aliases; with format 'auto' the
    format its fields complete is preferred, so a mapping is never overruled by a
    column that happens to be called 'text'."""
    present = list(dict.fromkeys(k for row in rows for k in row))
    given = _check_mapping(dict(columns or {}), present)
    _refuse_unsupported(present, given)
    if format not in ("auto", *REQUIRED):
        raise UserError(f"unknown data format '{format}'", f"choose one of: auto, {', '.join(REQUIRED)}")
    candidates = [format] if format != "auto" else _by_preference(given)
    for fmt in candidates:
        mapping = _resolve(fmt, given, present)
        if all(f in mapping for f in REQUIRED[fmt]):
            return FormatReport(fmt, mapping, len(rows), present)
    if format != "auto":
        missing = [f for f in REQUIRED[format] if f not in _resolve(format, given, present)]
        raise UserError(f"the {format} format needs a column for {', '.join(missing)}, and none was found "
                        f"among the data's columns ({', '.join(present)})",
                        f"map it, e.g. --columns {missing[0]}={present[0] if present else 'COLUMN'}")
    raise UserError(f"cannot tell the data's format from its columns ({', '.join(present) or 'none'})",
                    "expected columns: " + "; ".join(f"{f}: {', '.join(REQUIRED[f])}" for f in REQUIRED)
                    + ". Or map yours, e.g. --columns instruction=question,output=answer")


PREFERENCE_COLUMNS = ("rejected", "rejected_response", "response_rejected", "dispreferred")
MEDIA_COLUMNS = ("image", "images", "audio", "audios", "video", "videos", "pixel_values", "image_path")


def _refuse_unsupported(present: list[str], given: dict[str, str]) -> None:
    """Data for training this engine does not do is refused, not half-used in silence."""
    rejected = [c for c in present if c.lower() in PREFERENCE_COLUMNS]
    if rejected:
        chosen = next((c for c in present if c.lower() in ("chosen", "preferred")), "chosen")
        raise UserError(f"the data holds preference pairs (columns '{chosen}' and '{rejected[0]}'): preference "
                        "training (DPO and the like) is not supported; XGBLoRA learns from one response per "
                        "example",
                        f"to learn from the preferred answers alone, use a copy of the data without the "
                        f"'{rejected[0]}' column and map --columns prompt=PROMPT_COLUMN,completion={chosen}")
    media = [c for c in present if c.lower() in MEDIA_COLUMNS and c not in given.values()]
    if media:
        raise UserError(f"the data has {', '.join(repr(c) for c in media)} column(s): images, audio and video "
                        "are not supported (text-only language models)",
                        "use a copy of the data without those columns; the text columns are then used")


def _by_preference(given: dict[str, str]) -> list[str]:
    """Formats to try in order: those the user's mapping completes come first."""
    order = list(REQUIRED)
    return sorted(order, key=lambda f: (not all(k in given for k in REQUIRED[f]), order.index(f)))


def _resolve(fmt: str, given: dict[str, str], present: list[str]) -> dict[str, str]:
    """Column of each field of ``fmt``: the user's mapping, else the first alias present."""
    mapping: dict[str, str] = {}
    for canonical in REQUIRED[fmt] + OPTIONAL[fmt]:
        column = given.get(canonical) or next(
            (n for n in ALIASES[canonical] if n in present and n not in mapping.values()
             and n not in given.values()), None)
        if column:
            mapping[canonical] = column
    return mapping


def _check_mapping(mapping: dict[str, str], present: list[str]) -> dict[str, str]:
    for canonical, column in mapping.items():
        if canonical not in ALIASES:
            raise UserError(f"unknown field '{canonical}' in the column mapping",
                            f"the fields that can be mapped are: {', '.join(ALIASES)}")
        if column not in present:
            raise UserError(f"column '{column}' (mapped to {canonical}) is not in the data",
                            f"the data has columns: {', '.join(present)}")
    return mapping


def to_conversation(row: dict[str, Any], report: FormatReport, index: int | None = None) -> Conversation:
    """The row as chat messages (system/user/assistant), or a string for the text format.

    ``index`` is the row's 1-based number, used in error messages."""
    where = f"row {index}" if index is not None else "a row"
    get = _getter(row, report, where)
    if report.format == "text":
        return get("text")
    if report.format == "chat":
        return _messages(row.get(report.columns["messages"]), where)
    if report.format == "alpaca":
        user = get("instruction")
        extra = get("input", required=False)
        user = f"{user}\n\n{extra}" if extra else user
        reply = get("output")
    else:
        user, reply = get("prompt"), get("completion")
    system = get("system", required=False)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def _getter(row: dict[str, Any], report: FormatReport, where: str):
    def get(canonical: str, required: bool = True) -> str:
        column = report.columns.get(canonical)
        value = row.get(column) if column else None
        name = f"'{column}'" + (f" ({canonical})" if column != canonical else "")
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise UserError(f"{where}: field {name} is missing or empty",
                                "fill it in, or remove the row")
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UserError(f"{where}: field {name} should be text, got {type(value).__name__}",
                            "check the column mapping (--columns)")
        return str(value)

    return get


def _messages(raw: Any, where: str) -> list[dict[str, str]]:
    if isinstance(raw, str):  # a CSV cell holding the conversation as JSON
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            pass
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{where}: messages should be a non-empty list, got {type(raw).__name__}",
                        'write [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]')
    out = [_message(turn, where, i) for i, turn in enumerate(raw, start=1)]
    if not any(m["role"] == "assistant" for m in out):
        raise UserError(f"{where}: the conversation has no assistant message to learn from",
                        "each conversation needs at least one assistant (or gpt) turn")
    for number, m in enumerate(out, start=1):
        if m["role"] == "assistant" and not m["content"].strip():
            raise UserError(f"{where}, message {number}: the assistant's response is empty",
                            "an empty response teaches the model to answer nothing: fill it in, or remove the row")
    return out


def _message(turn: Any, where: str, number: int) -> dict[str, str]:
    """One {role, content} or ShareGPT {from, value} turn, as {role, content}."""
    if not isinstance(turn, dict):
        raise UserError(f"{where}, message {number}: expected an object, got {type(turn).__name__}",
                        'write {"role": ..., "content": ...}')
    raw_role = turn.get("role", turn.get("from"))
    role = SHAREGPT_ROLES.get(str(raw_role).lower()) if raw_role is not None else None
    if role is None:
        raise UserError(f"{where}, message {number}: unknown or missing role {raw_role!r}",
                        "roles are system, user and assistant (ShareGPT: system, human and gpt)")
    content = _text_content(turn.get("content", turn.get("value")), f"{where}, message {number}")
    if content is None:
        raise UserError(f"{where}, message {number} ({role}): content should be text",
                        'write {"role": ..., "content": "the text"}')
    return {"role": role, "content": content}


def _text_content(content: Any, where: str) -> str | None:
    """Text, or the text parts of a multimodal content list ([{"type": "text", "text": ...}])."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        media = [p.get("type") for p in content if p.get("type", "text") != "text"]
        if media:
            raise UserError(f"{where} holds {media[0]} content: images, audio and video are not supported "
                            "(text-only language models)", "keep the text parts only")
        texts = [p.get("text") for p in content if p.get("type", "text") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "".join(texts)
    return None
