"""Data and tokenizers the engine cannot train on are refused with a message, never half-used."""

import pytest

from xgblora_engine.data.formats import detect_format, to_conversation
from xgblora_engine.data.tokenize import ensure_chat_template
from xgblora_engine.errors import UserError


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "chosen": "good", "rejected": "bad"}, "preference pairs (columns 'chosen' and 'rejected')"),
    ({"question": "p", "chosen": "good", "rejected": "bad"}, "preference training (DPO and the like) is not supported"),
    ({"instruction": "describe", "output": "a cat", "image": {"path": "cat.png"}}, "'image' column(s)"),
    ({"messages": [], "audio": {"bytes": b""}}, "'audio' column(s)"),
])
def test_unsupported_columns_are_refused(row, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        detect_format([row])


def test_preferred_answers_alone_can_be_trained_by_mapping_them():
    row = {"prompt": "p", "chosen": "good"}
    report = detect_format([row], columns={"prompt": "prompt", "completion": "chosen"})
    assert to_conversation(row, report, 1)[-1] == {"role": "assistant", "content": "good"}


def test_chosen_alone_is_not_taken_for_a_completion():
    with pytest.raises(UserError, match="cannot tell the data's format"):
        detect_format([{"prompt": "p", "chosen": "good"}])


@pytest.mark.parametrize("row, message", [
    ({"instruction": "q", "output": "   "}, "row 3: field 'output' is missing or empty"),
    ({"prompt": "q", "completion": ""}, "row 3: field 'completion' is missing or empty"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
     "row 3, message 2: the assistant's response is empty"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "url": "x.png"}, {"type": "text", "text": "q"}]},
                   {"role": "assistant", "content": "a"}]}, "row 3, message 1 holds image content"),
])
def test_empty_responses_and_media_in_messages_are_refused(row, message):
    with pytest.raises(UserError, match=message):
        to_conversation(row, detect_format([row]), 3)


def test_a_tokenizer_without_template_and_without_eos_is_refused(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    tokenizer.eos_token = None
    with pytest.raises(UserError, match="no chat template and no end-of-sequence token"):
        ensure_chat_template(tokenizer)
