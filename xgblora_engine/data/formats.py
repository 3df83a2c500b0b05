"""Detect a dataset's format and turn each row into a conversation (or plain text).

Formats: alpaca (instruction / input / output), chat (a list of role/content messages,
or ShareGPT's from/value), prompt/completion, and plain text. A column mapping
overrides detection: its keys are the canonical field names below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xgblora_engine.errors import UserError

# canonical field -> column names recognised for it, in order of preference
ALIASES: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "conversations", "conversation", "dialog"),
    "instruction": ("instruction", "question", "query", "task"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "target"),
    "prompt": ("prompt",),
    "completion": ("completion", "chosen"),
    "text": ("text", "content", "document"),
    "system": ("system", "system_prompt"),
}
REQUIRED = {"chat": ("messages",), "alpaca": ("instruction", "output"),
            "prompt_completion": ("prompt", "completion"), "text": ("text",)}
OPTIONAL = {"chat": (), "alpaca": ("input", "system"), "prompt_completion": ("system",), "text": ()}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "bot": "assistant", "system": "system"}

Conversation = list[dict[str, str]] | str


@dataclass
class FormatReport:
    format: str
    columns: dict[str, str]  # canonical field -> column in the file
    n_rows: int
    all_columns: list[str] = field(default_factory=list)

    def describe(self) -> str:
        fields = ", ".join(f"{k}='{v}'" for k, v in self.columns.items())
        return f"{self.format} format ({fields}); {self.n_rows} rows"


def detect_format(rows: list[dict[str, Any]], format: str = "auto",
                  columns: dict[str, str] | None = None) -> FormatReport:
    present = list(dict.fromkeys(k for row in rows[:50] for k in row))
    mapping = dict(columns or {})
    for canonical, column in mapping.items():
        if canonical not in ALIASES:
            raise UserError(f"unknown field '{canonical}' in the column mapping",
                            f"map these fields: {', '.join(ALIASES)}")
        if column not in present:
            raise UserError(f"column '{column}' (mapped to {canonical}) is not in the data",
                            f"the data has columns: {', '.join(present)}")
    for canonical, names in ALIASES.items():
        if canonical not in mapping:
            found = next((n for n in names if n in present), None)
            if found and found not in mapping.values():
                mapping[canonical] = found
    chosen = format if format != "auto" else _first_complete(mapping)
    if chosen is None or any(f not in mapping for f in REQUIRED[chosen]):
        needed = REQUIRED.get(chosen) if chosen else None
        raise UserError(
            f"cannot tell the data's format from its columns ({', '.join(present)})"
            + (f": {chosen} needs {', '.join(needed)}" if needed else ""),
            "use columns instruction/output, messages, prompt/completion or text, or map yours, "
            "e.g. --columns instruction=question,output=answer")
    kept = {f: mapping[f] for f in REQUIRED[chosen] + OPTIONAL[chosen] if f in mapping}
    return FormatReport(chosen, kept, len(rows), present)


def _first_complete(mapping: dict[str, str]) -> str | None:
    for fmt in ("chat", "alpaca", "prompt_completion", "text"):
        if all(f in mapping for f in REQUIRED[fmt]):
            return fmt
    return None


def to_conversation(row: dict[str, Any], report: FormatReport, index: int) -> Conversation:
    """Row ``index`` (1-based, for messages) as chat messages, or a string for text."""
    get = _getter(row, report, index)
    if report.format == "text":
        return get("text")
    if report.format == "chat":
        return _messages(row[report.columns["messages"]], index)
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


def _getter(row: dict[str, Any], report: FormatReport, index: int):
    def get(canonical: str, required: bool = True) -> str:
        column = report.columns.get(canonical)
        value = row.get(column) if column else None
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise UserError(f"row {index}: field '{column}' is missing or empty",
                                "fill it in or remove the row")
            return ""
        if not isinstance(value, (str, int, float)):
            raise UserError(f"row {index}: field '{column}' should be text, got {type(value).__name__}",
                            "check the column mapping")
        return str(value)

    return get


def _messages(raw: Any, index: int) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise UserError(f"row {index}: messages should be a non-empty list", 'use [{"role": "user", "content": ...}, ...]')
    out = []
    for turn in raw:
        if not isinstance(turn, dict):
            raise UserError(f"row {index}: a message is a {type(turn).__name__}, not an object",
                            'use {"role": ..., "content": ...}')
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        role = SHAREGPT_ROLES.get(str(role).lower()) if role is not None else None
        if role is None or not isinstance(content, str):
            raise UserError(f"row {index}: a message lacks a known role or text content ({turn})",
                            "roles are system/user/assistant (or human/gpt); content must be text")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise UserError(f"row {index}: the conversation has no assistant message to learn from",
                        "each conversation needs at least one assistant (or gpt) turn")
    return out
