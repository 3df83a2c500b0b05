"""What the model says while it trains: greedy answers to a few fixed held-out prompts.

The prompts and references come from the held-out examples exactly as they were
tokenized for the loss (chat template, truncation), so an answer is scored against the
response the run holds out, not against a re-rendering of it: the prompt is every token
before the first learned one, the reference is that first learned span.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from xgblora_engine.boosting.loss import IGNORE, input_device
from xgblora_engine.export.common import end_of_turn_ids
from xgblora_engine.payloads import SampleAnswer
from xgblora_engine.scoring import scored


@dataclass
class SamplePrompt:
    ids: list[int]
    text: str  # the last user message (the whole prompt when the template hides it)
    reference: str


def user_turn_markers(tokenizer) -> tuple[str, str] | None:
    """The text the chat template puts around a user message that follows another turn:
    found by rendering a sentinel. None when the template will not render one."""
    marker = "\ue000"
    try:
        text = tokenizer.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": marker}],
                                             tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - e.g. a template that refuses a system turn
        return None
    before, _, after = text.partition(marker)
    head = before[before.rfind("S") + 1:]  # from the end of the system message to the user's
    return (head, after) if head and after else None


def last_user_message(tokenizer, ids: list[int], markers: tuple[str, str] | None) -> str:
    rendered = tokenizer.decode(ids, skip_special_tokens=False)
    if markers and markers[0] in rendered and rendered.endswith(markers[1]):
        start = rendered.rfind(markers[0]) + len(markers[0])
        return rendered[start:len(rendered) - len(markers[1])].strip()
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def sample_prompts(examples, tokenizer, n: int) -> list[SamplePrompt]:
    """The first ``n`` held-out examples that have a prompt and a learned response."""
    stop = set(end_of_turn_ids(tokenizer))
    markers = user_turn_markers(tokenizer)
    prompts = []
    for example in examples:
        if len(prompts) == n:
            break
        labels = list(example.labels)
        first = next((i for i, label in enumerate(labels) if label != IGNORE), None)
        if not first:  # nothing learned, or no prompt before it (plain text)
            continue
        end = next((i for i in range(first, len(labels)) if labels[i] == IGNORE), len(labels))
        reference = [t for t in labels[first:end] if t not in stop]
        ids = list(example.input_ids[:first])
        prompts.append(SamplePrompt(ids, last_user_message(tokenizer, ids, markers),
                                    tokenizer.decode(reference, skip_special_tokens=True).strip()))
    return prompts


@torch.no_grad()
def answer(model, tokenizer, prompts: list[SamplePrompt], max_new_tokens: int) -> tuple[list[SampleAnswer], float]:
    """Greedy answers to every prompt in one left-padded batch, and the seconds they took."""
    started = time.perf_counter()
    stop = end_of_turn_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    width = max(len(p.ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p.ids):] = torch.tensor(p.ids)
        mask[row, width - len(p.ids):] = 1
    device = input_device(model)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad,
                             temperature=None, top_p=None, top_k=None)
    finally:
        model.train(was_training)
    answers = []
    for p, row in zip(prompts, out[:, width:].tolist()):
        cut = next((i for i, t in enumerate(row) if t in stop), len(row))
        text = tokenizer.decode(row[:cut], skip_special_tokens=True).strip()
        answers.append(scored(p.text, p.reference, text))
    return answers, time.perf_counter() - started
