import copy

from xgblora_engine.data.tokenize import IGNORE, encode, ensure_chat_template

CHAT = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."},
        {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "It is 6."}]


def labelled_text(tok, example):
    return tok.decode([t for t in example.labels if t != IGNORE])


def test_only_assistant_turns_and_their_end_markers_carry_loss(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT, 256)
    assert labelled_text(smol_tokenizer, e) == "It is 4.<|im_end|>It is 6.<|im_end|>"
    assert not e.truncated and len(e.labels) == len(e.input_ids)


def test_train_on_all_and_plain_text(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT, 256, train_on="all")
    assert e.labels == e.input_ids
    t = encode(smol_tokenizer, "plain words", 256)
    assert t.input_ids[-1] == smol_tokenizer.eos_token_id and t.labels == t.input_ids


def test_truncation_is_flagged(smol_tokenizer):
    e = encode(smol_tokenizer, CHAT, 20)
    assert e.truncated and e.n_tokens == 20


def test_fallback_template_for_a_tokenizer_without_one(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = None
    assert ensure_chat_template(tok) is True
    e = encode(tok, CHAT[:2], 256)
    assert labelled_text(tok, e) == "It is 4.<|im_end|>"
    assert "### Instruction:" in tok.decode(e.input_ids)
    assert ensure_chat_template(tok) is False
