"""The Modelfile TEMPLATE is derived from the chat template itself, for template families
beyond ChatML, and checked against apply_chat_template."""

import copy
from types import SimpleNamespace

import pytest

from xgblora_engine.export import ollama as O

LLAMA3 = ("{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
GEMMA = ("{{ '<bos>' }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
         "else message['role'] %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + "
         "'<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")
PLAIN_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
MODEL = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192), generation_config=None)


def with_template(tokenizer, template):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def test_smollm2_chatml_with_its_default_system_prompt(chat_tokenizer, tmp_path):
    pieces = O.write_modelfile(tmp_path, "model-f16.gguf", chat_tokenizer, MODEL)
    assert (pieces.user_prefix, pieces.assistant_prefix, pieces.assistant_suffix) == (
        "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n")
    assert pieces.default_system.startswith("You are a helpful AI assistant named SmolLM")
    text = (tmp_path / "Modelfile").read_text()
    assert "PARAMETER num_ctx 4096" in text and text.count("PARAMETER stop") == 2
    assert O.check_modelfile(tmp_path, chat_tokenizer).ok


@pytest.mark.parametrize("template, expect", [
    (PLAIN_CHATML, {"default_system": None, "preamble": "", "stop": "<|im_end|>"}),
    (LLAMA3, {"default_system": None, "preamble": "<|begin_of_text|>", "stop": "<|eot_id|>"}),
    (GEMMA, {"default_system": None, "preamble": "<bos>", "stop": "<end_of_turn>", "supports_system": False}),
])
def test_other_template_families(chat_tokenizer, tmp_path, template, expect):
    tok = with_template(chat_tokenizer, template)
    pieces = O.write_modelfile(tmp_path, "m.gguf", tok, MODEL)
    assert pieces.default_system == expect["default_system"] and pieces.preamble == expect["preamble"]
    assert pieces.supports_system == expect.get("supports_system", True)
    text = (tmp_path / "Modelfile").read_text()
    assert f'PARAMETER stop "{expect["stop"]}"' in text
    assert ("SYSTEM" in text) is False
    check = O.check_modelfile(tmp_path, tok)
    assert check.ok, check.detail


def test_a_wrong_template_in_the_modelfile_is_caught(chat_tokenizer, tmp_path):
    O.write_modelfile(tmp_path, "m.gguf", chat_tokenizer, MODEL)
    path = tmp_path / "Modelfile"
    path.write_text(path.read_text().replace("<|im_start|>assistant\n", "<|im_start|>assistant "))
    check = O.check_modelfile(tmp_path, chat_tokenizer)
    assert not check.ok and "without a system prompt" in check.detail


def test_no_chat_template_gives_a_plain_modelfile(chat_tokenizer, tmp_path):
    tok = with_template(chat_tokenizer, None)
    with pytest.raises(O.NoChatTemplate):
        O.write_modelfile(tmp_path, "m.gguf", tok, MODEL)
    assert (tmp_path / "Modelfile").read_text().startswith("FROM ./m.gguf")
