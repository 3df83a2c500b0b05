"""Load a frozen base model and its tokenizer, with the dtype, device and quantization asked for."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from xgblora_engine.config import ModelConfig
from xgblora_engine.errors import UserError
from xgblora_engine.models.source import ModelSource, resolve_source
from xgblora_engine.models.targets import find_layers, target_names

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ModelInfo:
    name: str
    architecture: str
    n_layers: int
    hidden_size: int
    vocab_size: int
    n_params: int
    dtype: str
    device: str
    quantization: str
    weight_bytes: int
    targets: list[str] = field(default_factory=list)


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    source: ModelSource
    info: ModelInfo


def choose_device(requested: str, cuda_available: bool) -> str:
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested.startswith("cuda") and not cuda_available:
        raise UserError(f"device '{requested}' was asked for but no CUDA GPU is available",
                        "use --device cpu, or check the NVIDIA driver and that torch is a CUDA build")
    return requested


def choose_dtype(requested: str, device_type: str, bf16_supported: bool) -> str:
    """auto: bf16 on a GPU that supports it, else fp32 (CPU half math is slow and lossy)."""
    if requested == "auto":
        return "bf16" if device_type == "cuda" and bf16_supported else "fp32"
    if requested == "bf16" and device_type == "cuda" and not bf16_supported:
        raise UserError("this GPU does not support bf16", "use --dtype fp16 or fp32")
    return requested


def _hub_kwargs(source: ModelSource) -> dict:
    kwargs: dict = {}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    return kwargs


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _load_error(source: ModelSource, exc: Exception) -> UserError:
    text = str(exc)
    if source.kind == "hub":
        if "is not a valid model identifier" in text or "404" in text or "Repository Not Found" in text:
            return UserError(f"unknown model '{source.path}': the Hub has no such repository",
                             "check the spelling of the id, or pass a local folder or .gguf file")
        return UserError(f"model '{source.path}' is not in the local Hugging Face cache and the Hub "
                         f"cannot be reached{' (HF_HUB_OFFLINE is set)' if _offline() else ''}",
                         f"download it once while online (`hf download {source.path}`), "
                         "or pass a local folder or .gguf file")
    return UserError(f"could not load model from {source.path}: {text.splitlines()[0] if text else type(exc).__name__}",
                     "check that the folder or file is a complete Hugging Face / GGUF model")


def load_tokenizer(cfg: ModelConfig, source: ModelSource | None = None):
    from transformers import AutoTokenizer

    source = source or resolve_source(cfg.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **_hub_kwargs(source))
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _quantization_config(kind: str, compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_model(cfg: ModelConfig, tokenizer=None) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    source = resolve_source(cfg.name)
    device = choose_device(cfg.device, torch.cuda.is_available())
    bf16_ok = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    dtype = choose_dtype(cfg.dtype, device.split(":")[0], bf16_ok)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg, source)
    kwargs = {**_hub_kwargs(source), "dtype": TORCH_DTYPES[dtype]}
    try:
        if cfg.quantize != "none" and source.gguf_file:
            model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
            _drop_gguf_marker(model)
            model = quantize_in_place(model, cfg.quantize, TORCH_DTYPES[dtype])
        elif cfg.quantize != "none":
            kwargs["quantization_config"] = _quantization_config(cfg.quantize, TORCH_DTYPES[dtype])
            model = AutoModelForCausalLM.from_pretrained(source.path, device_map={"": device}, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
            if source.gguf_file:
                _drop_gguf_marker(model)
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from None
    if cfg.quantize == "none" or source.gguf_file:
        model.to(device)
    model.requires_grad_(False)
    model.eval()
    return LoadedModel(model, tokenizer, source, describe(model, source, dtype, device, cfg.quantize))


def _drop_gguf_marker(model: nn.Module) -> None:
    """GGUF weights arrive dequantized; the quantizer marker only blocks saving them."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def quantize_in_place(model: nn.Module, kind: str, compute_dtype: torch.dtype) -> nn.Module:
    """Swap every linear inside the transformer blocks for a bitsandbytes one.

    Used where transformers cannot quantize at load time (a GGUF source). The LM head and
    embeddings stay in full precision, as transformers does."""
    import bitsandbytes as bnb

    _, layers = find_layers(model)
    for layer in layers:
        for name, module in list(layer.named_modules()):
            if type(module) is not nn.Linear:
                continue
            parent_name, _, child = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, child, _bnb_linear(bnb, module, kind, compute_dtype))
    return model


def _bnb_linear(bnb, linear: nn.Linear, kind: str, compute_dtype: torch.dtype) -> nn.Module:
    bias = linear.bias is not None
    weight = linear.weight.data.to(torch.float32)
    if kind == "4bit":
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias,
                              compute_dtype=compute_dtype, quant_type="nf4")
        q.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    else:
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False)
        q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    if bias:
        q.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
    return q.to(linear.weight.device)


def describe(model: nn.Module, source: ModelSource, dtype: str, device: str, quantize: str) -> ModelInfo:
    _, layers = find_layers(model)
    config = model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    weight_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    return ModelInfo(
        name=source.display_name, architecture=str(getattr(config, "model_type", type(model).__name__)),
        n_layers=len(layers), hidden_size=int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0)),
        vocab_size=int(getattr(config, "vocab_size", 0)), n_params=sum(p.numel() for p in model.parameters()),
        dtype=dtype, device=device, quantization=quantize, weight_bytes=weight_bytes,
        targets=target_names(model))
