import pytest

from xgblora_engine.data.tokenize import (
    FALLBACK_TEMPLATE,
    IGNORE,
    encode,
    ensure_chat_template,
    preview,
)
from xgblora_engine.errors import UserError

CHAT = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."},
        {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "It is 6."}]
SMOL_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM"


def labelled_text(tok, example):
    return tok.decode([t for t in example.labels if t != IGNORE])


def test_only_assistant_turns_and_their_end_markers_carry_loss(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT, 256)
    assert labelled_text(smol_tokenizer, e) == "It is 4.<|im_end|>It is 6.<|im_end|>"
    assert not e.truncated and len(e.labels) == len(e.input_ids) == e.n_tokens
    # labelled positions carry their own token id
    assert all(label in (IGNORE, tok) for label, tok in zip(e.labels, e.input_ids))


def test_smollm2_template_injects_its_default_system_prompt_unlabelled(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT[:2], 256)
    assert SMOL_DEFAULT_SYSTEM in smol_tokenizer.decode(e.input_ids)
    assert SMOL_DEFAULT_SYSTEM not in labelled_text(smol_tokenizer, e)
    with_system = [{"role": "system", "content": "Answer tersely."}] + CHAT[:2]
    e = encode(smol_tokenizer, with_system, 256)
    text = smol_tokenizer.decode(e.input_ids)
    assert "Answer tersely." in text and SMOL_DEFAULT_SYSTEM not in text
    assert labelled_text(smol_tokenizer, e) == "It is 4.<|im_end|>"


def test_template_bos_is_not_added_twice(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT[:2], 256)
    # SmolLM2's bos is <|im_start|>, which the template writes itself
    assert e.input_ids[0] == smol_tokenizer.bos_token_id and e.input_ids[1] != smol_tokenizer.bos_token_id


def test_a_leading_assistant_turn_is_still_labelled(smol_tokenizer):
    conv = [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bye."}]
    assert labelled_text(smol_tokenizer, encode(smol_tokenizer, conv, 256)) == "Hello!<|im_end|>Bye.<|im_end|>"


def test_train_on_all_and_plain_text(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT, 256, train_on="all")
    assert e.labels == e.input_ids
    t = encode(smol_tokenizer, "plain words", 256)
    assert t.input_ids[-1] == smol_tokenizer.eos_token_id and t.labels == t.input_ids
    assert smol_tokenizer.decode(t.input_ids) == "plain words<|im_end|>"
    with pytest.raises(UserError, match="invalid train_on 'prompt'"):
        encode(smol_tokenizer, CHAT, 256, train_on="prompt")


def test_a_long_conversation_loses_its_oldest_turns_and_keeps_its_last_response_whole(smol_tokenizer):
    full = encode(smol_tokenizer, CHAT, 256)
    last_exchange = encode(smol_tokenizer, CHAT[2:], 256)
    e = encode(smol_tokenizer, CHAT, full.n_tokens - 1)
    assert e.truncated and e.turns_cut == 2 and e.tokens_cut == 0
    assert e.input_ids == last_exchange.input_ids
    assert labelled_text(smol_tokenizer, e) == "It is 6.<|im_end|>"


def test_then_the_start_of_the_prompt_is_cut_and_the_end_of_turn_kept(smol_tokenizer):
    long = [{"role": "user", "content": "tell me " * 40 + "the answer"}, {"role": "assistant", "content": "It is 6."}]
    full = encode(smol_tokenizer, long, 256)
    e = encode(smol_tokenizer, long, 24)
    assert e.truncated and e.n_tokens == 24 and e.tokens_cut == full.n_tokens - 24
    assert e.input_ids[0] == smol_tokenizer.bos_token_id  # the sequence still starts as the model knows
    assert e.input_ids[1:] == full.input_ids[-23:]
    assert labelled_text(smol_tokenizer, e) == "It is 6.<|im_end|>"


def test_a_response_longer_than_the_limit_is_dropped_not_cut(smol_tokenizer):
    long_reply = [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "one two " * 30}]
    e = encode(smol_tokenizer, long_reply, 24)
    assert e.truncated and e.n_tokens == 0 and e.n_targets == 0


def test_with_every_token_trained_the_end_is_kept_too(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT, encode(smol_tokenizer, CHAT, 256).n_tokens - 1, train_on="all")
    assert e.turns_cut == 2 and e.labels == e.input_ids
    assert smol_tokenizer.decode(e.input_ids).rstrip().endswith("It is 6.<|im_end|>")


def test_a_long_plain_text_keeps_its_start(smol_tokenizer):
    full = encode(smol_tokenizer, "word " * 50, 256)
    e = encode(smol_tokenizer, "word " * 50, 20)
    assert e.truncated and e.input_ids == full.input_ids[:20]


def test_the_preview_is_the_trained_tokens_with_the_learned_ones_marked(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT, 256)
    shown = preview(smol_tokenizer, e)
    assert shown.text == smol_tokenizer.decode(e.input_ids) and not shown.truncated
    assert shown.text.startswith("<|im_start|>system\n" + SMOL_DEFAULT_SYSTEM)
    assert [shown.text[a:b] for a, b in shown.spans] == ["It is 4.<|im_end|>", "It is 6.<|im_end|>"]
    assert shown.text[: shown.spans[0][0]].endswith("<|im_start|>assistant\n")


def test_a_truncated_preview_ends_where_training_does(smol_tokenizer):
    full = encode(smol_tokenizer, CHAT, 256)
    cut = encode(smol_tokenizer, CHAT, full.n_tokens - 3)  # too long: the oldest turns go
    shown = preview(smol_tokenizer, cut)
    assert shown.truncated and shown.text == smol_tokenizer.decode(cut.input_ids)
    assert shown.text[slice(*shown.spans[-1])] == "It is 6.<|im_end|>"  # the last reply keeps its end


def test_fallback_template_for_a_tokenizer_without_one(tiny_tokenizer):
    assert tiny_tokenizer.chat_template is None and tiny_tokenizer.pad_token is None
    assert ensure_chat_template(tiny_tokenizer) is True
    assert tiny_tokenizer.pad_token == tiny_tokenizer.eos_token == "</s>"
    e = encode(tiny_tokenizer, CHAT, 256)
    assert labelled_text(tiny_tokenizer, e) == "It is 4.</s>It is 6.</s>"
    text = tiny_tokenizer.decode(e.input_ids)
    assert text.startswith("<s>### Instruction:\nWhat is 2+2?\n\n### Response:\nIt is 4.</s>")
    assert e.input_ids.count(tiny_tokenizer.bos_token_id) == 1  # the tokenizer's own BOS, once
    assert ensure_chat_template(tiny_tokenizer) is False


def test_fallback_template_renders_a_generation_prompt(tiny_tokenizer):
    tiny_tokenizer.chat_template = FALLBACK_TEMPLATE
    prompt = tiny_tokenizer.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "### Instruction:\nWhat is 2+2?\n\n### Response:\n"


def test_plain_text_gets_the_tokenizers_bos_and_an_eos(tiny_tokenizer):
    e = encode(tiny_tokenizer, "It is 4.", 64)
    assert tiny_tokenizer.decode(e.input_ids) == "<s>It is 4.</s>" and e.labels == e.input_ids


def test_a_template_that_rewrites_earlier_turns_falls_back_to_the_reply_text(tiny_tokenizer):
    # the last assistant turn renders differently from earlier ones, so prefixes don't match
    tiny_tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}"
        "{{ ('LAST\\n' if loop.last else 'A\\n') + m['content'] + eos_token + '\\n' }}"
        "{% else %}{{ 'U\\n' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'A\\n' }}{% endif %}")
    e = encode(tiny_tokenizer, CHAT, 256)
    assert labelled_text(tiny_tokenizer, e) == "It is 4.</s>It is 6.</s>"


class SlowTokenizer:
    """A tokenizer without offset mappings, as Python ('slow') tokenizers are."""

    def __init__(self, fast):
        self._fast = fast

    def __getattr__(self, name):
        return getattr(self._fast, name)

    def __call__(self, text, **kwargs):
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        return self._fast(text, **kwargs)


def test_tokenizers_without_offsets_are_labelled_by_segments(smol_tokenizer):
    e = encode(SlowTokenizer(smol_tokenizer), CHAT, 256)
    assert labelled_text(smol_tokenizer, e) == "It is 4.<|im_end|>It is 6.<|im_end|>"
    assert e.input_ids == encode(smol_tokenizer, CHAT, 256).input_ids
