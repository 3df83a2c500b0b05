"""Render conversations with the model's own chat template and label the response tokens."""

from __future__ import annotations

from dataclasses import dataclass

from xgblora_engine.data.formats import Conversation
from xgblora_engine.errors import UserError
from xgblora_engine.payloads import PreviewExample

IGNORE = -100  # label of a position that carries no loss (the value torch's cross-entropy skips)

# Used only when the tokenizer has no chat template. Every assistant turn ends with the
# eos token so a fine-tuned model learns to stop. Newlines sit inside Jinja strings so the
# template renders the same whatever whitespace options the renderer uses.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\\n\\n' }}"
    "{% elif m['role'] == 'user' %}{{ '### Instruction:\\n' + m['content'] + '\\n\\n' }}"
    "{% else %}{{ '### Response:\\n' + m['content'] + eos_token + '\\n\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)

Span = tuple[int, int]  # [start, end) character offsets in the rendered text


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken
    truncated: bool
    turns_cut: int = 0  # oldest messages removed to fit seq_len
    tokens_cut: int = 0  # tokens cut from the start of the prompt to fit seq_len

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        """Tokens that carry loss; the first position never does, as nothing precedes it."""
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def ensure_chat_template(tokenizer) -> bool:
    """Install the fallback template if the tokenizer has none; True if it did.
    Also gives the tokenizer a pad token (eos) when it lacks one."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None and tokenizer.unk_token is None:
            raise UserError("the tokenizer has neither an end-of-sequence nor a padding token",
                            "use a model whose tokenizer defines eos_token (most chat models do)")
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if getattr(tokenizer, "chat_template", None):
        return False
    if tokenizer.eos_token is None:  # the fallback ends every response with it
        raise UserError("the tokenizer has no chat template and no end-of-sequence token, so no template can "
                        "mark where a response ends",
                        "use a chat model's tokenizer, or add a chat_template and an eos_token to "
                        "tokenizer_config.json")
    tokenizer.chat_template = FALLBACK_TEMPLATE
    return True


def encode(tokenizer, conversation: Conversation, seq_len: int, train_on: str = "response") -> Encoded:
    """Token ids and labels of one example, at most ``seq_len`` of them.

    Text: loss on every token, eos appended; a long text keeps its start. Chat: rendered
    with the tokenizer's chat template; with train_on='response' only the assistant turns
    (and the end-of-turn marker after each) carry loss, with 'all' every token does. A
    conversation too long keeps its last response whole, end-of-turn marker included (a
    model that never sees it learns not to stop): the oldest turns go first, then the
    start of the prompt; one whose last response alone does not fit comes back empty."""
    if train_on not in ("response", "all"):
        raise UserError(f"invalid train_on '{train_on}'", "choose 'response' or 'all'")
    if isinstance(conversation, str):
        ids = _bos(tokenizer, conversation) + tokenizer(conversation, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        return _truncate(ids, list(ids), seq_len)
    return _fit_keeping_the_end(tokenizer, conversation, seq_len, train_on)


def _encode_chat(tokenizer, messages: list[dict[str, str]], train_on: str) -> tuple[list[int], list[int], int | None]:
    """(ids, labels, index of the last response's first token, None if it was not found)."""
    text, spans = response_spans(tokenizer, messages)
    ids, labelled = tokenize_spans(tokenizer, text, spans)
    response_start = _last_run_start(labelled)
    if train_on == "all":
        ids, labelled = tokenize_spans(tokenizer, text, [(0, len(text))])
    labels = [tok if inside else IGNORE for tok, inside in zip(ids, labelled)]
    return ids, labels, response_start


def _last_run_start(labelled: list[bool]) -> int | None:
    """First token of the last labelled stretch: the last response."""
    end = next((i for i in range(len(labelled) - 1, -1, -1) if labelled[i]), None)
    if end is None:
        return None
    start = end
    while start > 0 and labelled[start - 1]:
        start -= 1
    return start


def _fit_keeping_the_end(tokenizer, messages: list[dict[str, str]], seq_len: int, train_on: str) -> Encoded:
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns, turns_cut = messages[len(system):], 0
    while True:
        ids, labels, response_start = _encode_chat(tokenizer, system + turns, train_on)
        if len(ids) <= seq_len:
            return Encoded(ids, labels, turns_cut > 0, turns_cut=turns_cut)
        later = _next_exchange(turns)
        if later is None:
            break
        turns, turns_cut = turns[later:], turns_cut + later
    if response_start is None:  # the reply could not be located: keep the start as before
        return _truncate(ids, labels, seq_len)
    keep_bos = 1 if ids and ids[0] == tokenizer.bos_token_id else 0
    room = seq_len - keep_bos
    if len(ids) - response_start >= room:  # the response alone (and one token before it) does not fit
        return Encoded([], [], True, turns_cut=turns_cut, tokens_cut=len(ids))
    cut = len(ids) - seq_len
    ids = ids[:keep_bos] + ids[keep_bos + cut:]
    labels = labels[:keep_bos] + labels[keep_bos + cut:]
    return Encoded(ids, labels, True, turns_cut=turns_cut, tokens_cut=cut)


def _next_exchange(turns: list[dict[str, str]]) -> int | None:
    """Where the second exchange starts (its user turn), if the last response is not in the first."""
    users = [i for i, m in enumerate(turns) if m["role"] == "user"]
    last_reply = max((i for i, m in enumerate(turns) if m["role"] == "assistant"), default=-1)
    later = [i for i in users if 0 < i < last_reply]
    return later[0] if later else None


def render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def response_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[Span]]:
    """The full rendered text and the character span of every assistant turn.

    A span runs from the end of the prompt rendered up to that turn (with the generation
    prompt) to the end of the text rendered through that turn, so it covers the reply
    and the template's end-of-turn marker (e.g. ``<|im_end|>``), which the model must
    learn to emit. Templates that render a turn differently once later turns follow
    (some drop earlier reasoning) fall back to finding the reply's text itself."""
    full = render(tokenizer, messages)
    spans: list[Span] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        span = _prefix_span(tokenizer, messages, i, full)
        if span is None:
            span = _found_span(tokenizer, full, message["content"], spans[-1][1] if spans else 0)
        if span is not None:
            spans.append(span)
    return full, spans


def _prefix_span(tokenizer, messages: list[dict[str, str]], i: int, full: str) -> Span | None:
    if i == 0:  # nothing to render before a leading assistant turn
        return None
    before = render(tokenizer, messages[:i], generation_prompt=True)
    through = render(tokenizer, messages[: i + 1])
    if not (full.startswith(through) and through.startswith(before)):
        return None
    return len(before), len(through.rstrip())


def _found_span(tokenizer, full: str, content: str, search_from: int) -> Span | None:
    start = full.find(content, search_from)
    if start < 0:
        return None
    end = start + len(content)
    eos = tokenizer.eos_token
    if eos and full.startswith(eos, end):  # the end-of-turn marker the model must learn to emit
        end += len(eos)
    return start, end


def tokenize_spans(tokenizer, text: str, spans: list[Span]) -> tuple[list[int], list[bool]]:
    """Token ids of ``text`` (tokenized once, as at inference) and whether each token
    overlaps a span. A token straddling a span's start (' It' after 'Response:') is
    labelled: without it the reply's first word would carry no loss. A BOS is prepended only if the tokenizer normally adds one and the
    template did not already write it."""
    bos = _bos(tokenizer, text)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow (Python) tokenizers have no offsets
        ids, labelled = _tokenize_segments(tokenizer, text, spans)
    else:
        ids = enc["input_ids"]
        labelled = [_overlaps(offset, spans) for offset in enc["offset_mapping"]]
    return bos + ids, [False] * len(bos) + labelled


def _overlaps(offset: tuple[int, int], spans: list[Span]) -> bool:
    start, end = offset
    return end > start and any(start < e and end > s for s, e in spans)


def _tokenize_segments(tokenizer, text: str, spans: list[Span]) -> tuple[list[int], list[bool]]:
    """Tokenize the pieces between span boundaries separately (tokens may differ slightly
    from tokenizing the whole text at those boundaries, but the labels are exact)."""
    cuts = sorted({0, len(text), *(p for span in spans for p in span)})
    ids: list[int] = []
    labelled: list[bool] = []
    for start, end in zip(cuts, cuts[1:]):
        piece = tokenizer(text[start:end], add_special_tokens=False)["input_ids"]
        ids += piece
        labelled += [any(s <= start < e for s, e in spans)] * len(piece)
    return ids, labelled


def _bos(tokenizer, text: str) -> list[int]:
    bos_id, bos = tokenizer.bos_token_id, tokenizer.bos_token
    if bos_id is None or (bos and text.startswith(bos)):
        return []
    adds_bos = tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos_id]
    return [bos_id] if adds_bos else []


def _truncate(ids: list[int], labels: list[int], seq_len: int) -> Encoded:
    truncated = len(ids) > seq_len
    return Encoded(ids[:seq_len], labels[:seq_len], truncated)


def preview(tokenizer, example: Encoded) -> PreviewExample:
    """The example as it is trained: the text of its tokens (after truncation) with the
    spans of those that carry loss, decoded from the very ids and labels the trainer
    gets, so what the Data panel shows cannot differ from what is learned. A span's ends
    are the lengths of the text decoded up to its first and past its last token."""
    def text_of(n_tokens: int) -> str:
        return tokenizer.decode(example.input_ids[:n_tokens], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)

    spans = [(len(text_of(start)), len(text_of(end))) for start, end in _learned_runs(example)]
    return PreviewExample(text=text_of(example.n_tokens), spans=spans, truncated=example.truncated)


def _learned_runs(example: Encoded) -> list[tuple[int, int]]:
    """[start, end) token ranges that carry loss (the first token never does)."""
    runs: list[tuple[int, int]] = []
    for i, label in enumerate(example.labels):
        if i == 0 or label == IGNORE:
            continue
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs
