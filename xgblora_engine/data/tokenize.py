"""Render conversations with the model's own chat template and label the response tokens."""

from __future__ import annotations

from dataclasses import dataclass

from xgblora_engine.data.formats import Conversation

IGNORE = -100

# Used only when the tokenizer has no chat template. Ends every assistant turn with the
# eos token so a fine-tuned model learns to stop.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n\n"
    "{% else %}### Response:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def ensure_chat_template(tokenizer) -> bool:
    """Install the fallback template if the tokenizer has none; True if it did."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = FALLBACK_TEMPLATE
    return True


def render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def response_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans of every assistant turn.

    A span runs from the end of the prompt rendered up to that turn (with the generation
    prompt) to the end of the text rendered through that turn, so it covers the reply
    and the template's end-of-turn marker (e.g. ``<|im_end|>``), which the model must
    learn to emit."""
    full = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = render(tokenizer, messages[: i + 1])
        if full.startswith(through) and through.startswith(before):
            spans.append((len(before), len(through.rstrip("\n"))))
        else:  # a template that is not prefix-stable: fall back to the reply text itself
            start = full.find(message["content"], spans[-1][1] if spans else 0)
            if start >= 0:
                spans.append((start, start + len(message["content"])))
    return full, spans


def encode(tokenizer, conversation: Conversation, seq_len: int, train_on: str = "response") -> Encoded:
    if isinstance(conversation, str):
        ids = tokenizer(conversation, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
        return _truncate(ids, list(ids), seq_len)
    text, spans = response_spans(tokenizer, conversation)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if train_on == "all":
        return _truncate(ids, list(ids), seq_len)
    labels = [tok if _inside(off, spans) else IGNORE for tok, off in zip(ids, offsets)]
    return _truncate(ids, labels, seq_len)


def _inside(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    start, end = offset
    return end > start and any(s <= start and end <= e for s, e in spans)


def _truncate(ids: list[int], labels: list[int], seq_len: int) -> Encoded:
    truncated = len(ids) > seq_len
    return Encoded(ids[:seq_len], labels[:seq_len], truncated)
