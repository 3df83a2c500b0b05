"""Load a frozen base model and its tokenizer, with the dtype, device and quantization asked
for, on one device or spread over several GPUs (``shard_gpus``, see models/sharding.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec
import torch
from torch import nn

from xgblora_engine.config import DTYPES, QUANTIZE, ModelConfig, RunConfig
from xgblora_engine.devices import BF16_MIN_MAJOR
from xgblora_engine.errors import UserError
from xgblora_engine.models import gguf_cache
from xgblora_engine.models.hub import hub_location
from xgblora_engine.models.quantize import bnb_config, logical_numel, quantize_in_place
from xgblora_engine.models.sharding import shard_device_map, shard_gpus_to_use
from xgblora_engine.models.source import ModelSource, resolve_source
from xgblora_engine.models.targets import find_layers, target_names
from xgblora_engine.payloads import ModelInfo

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CUDA_DEVICE = re.compile(r"^cuda(:\d+)?$")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    source: ModelSource
    info: ModelInfo


def choose_device(requested: str, cuda_available: bool, cuda_count: int = 1) -> str:
    """auto: the first GPU when there is one, else the CPU."""
    requested = requested.strip().lower()
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested == "cpu":
        return requested
    if not CUDA_DEVICE.match(requested):
        raise UserError(f"invalid device '{requested}'", "use auto, cpu, cuda or cuda:N")
    if not cuda_available:
        raise UserError(f"device '{requested}' was asked for but no CUDA GPU is available",
                        "use --device cpu, or check the NVIDIA driver and that torch is a CUDA build")
    index = int(requested.partition(":")[2] or 0)
    if index >= cuda_count:
        raise UserError(f"device '{requested}' does not exist: {cuda_count} GPU(s) found",
                        f"use cuda:0 to cuda:{cuda_count - 1}")
    return requested


def choose_dtype(requested: str, device_type: str, bf16_supported: bool) -> str:
    """auto: bf16 on a GPU that supports it, else fp32 (half math on a CPU is slow and lossy)."""
    if requested not in DTYPES:
        raise UserError(f"invalid dtype '{requested}'", f"choose one of: {', '.join(DTYPES)}")
    if requested == "auto":
        return "bf16" if device_type == "cuda" and bf16_supported else "fp32"
    if requested == "bf16" and device_type == "cuda" and not bf16_supported:
        raise UserError("this GPU does not support bf16", "use --dtype fp16 or fp32")
    return requested


def _device_and_dtype(cfg: ModelConfig) -> tuple[str, str, list[int]]:
    """(input device, dtype, GPUs to shard over: [] when not sharded)."""
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    gpus = shard_gpus_to_use(cfg.shard_gpus, cfg.device, cuda, count)
    if gpus:  # bf16 only if every GPU of the shard has it (capability 8.0+)
        device = f"cuda:{gpus[0]}"
        bf16_ok = all(torch.cuda.get_device_capability(i)[0] >= BF16_MIN_MAJOR for i in gpus)
    else:
        device = choose_device(cfg.device, cuda, count)
        bf16_ok = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return device, choose_dtype(cfg.dtype, device.split(":")[0], bf16_ok), gpus


def _location(source: ModelSource, need_weights: bool) -> str:
    """The path (or, for an uncached Hub id, the id) that from_pretrained reads."""
    if source.kind == "hub":
        return hub_location(source.path, need_weights)
    return source.path


def _gguf_kwargs(source: ModelSource, for_model: bool) -> dict:
    if not source.gguf_file:
        return {}
    if not for_model:
        return {"gguf_file": source.gguf_file}
    from transformers import GgufConfig

    # Explicitly dequantized: with the optional `kernels` package transformers would
    # otherwise keep the weights packed in GgufLinear modules, which cannot be boosted.
    return {"gguf_file": source.gguf_file, "quantization_config": GgufConfig(dequantize=True)}


def _what(source: ModelSource) -> str:
    if source.gguf_file:
        return f"{source.path}/{source.gguf_file}"
    return f"'{source.path}'" if source.kind == "hub" else source.path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_error(source: ModelSource, exc: Exception) -> UserError:
    return UserError(f"could not load model {_what(source)}: {_first_line(exc)}",
                     "check that it is a complete Hugging Face model folder or a .gguf file "
                     "of an architecture transformers supports")


def load_tokenizer(cfg: ModelConfig, source: ModelSource | None = None):
    """The tokenizer alone (fast: no weights are read). A missing pad token becomes eos."""
    from transformers import AutoTokenizer

    source = source or resolve_source(cfg.name)
    tokenizer = _from_gguf_cache(source, "tokenizer", AutoTokenizer.from_pretrained)
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(_location(source, need_weights=False),
                                                      **_gguf_kwargs(source, for_model=False))
        except Exception as exc:
            # A damaged .gguf fails inside its reader with any kind of error.
            if not (source.gguf_file or isinstance(exc, (OSError, ValueError, KeyError, RuntimeError))):
                raise
            raise _load_error(source, exc) from None
        if source.gguf_file:
            gguf_cache.keep(source, "tokenizer", tokenizer.save_pretrained, nbytes=0)
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, tokenizer=None, run: RunConfig | None = None) -> LoadedModel:
    """Model and tokenizer (the one given, else loaded), every parameter frozen, in eval
    mode on the chosen device, or spread over GPUs. ``run``, the whole run's settings,
    sizes what each GPU keeps free for training when the model is sharded."""
    if cfg.quantize not in QUANTIZE:
        raise UserError(f"invalid quantization '{cfg.quantize}'", f"choose one of: {', '.join(QUANTIZE)}")
    source = resolve_source(cfg.name)
    device, dtype, gpus = _device_and_dtype(cfg)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg, source)
    device_map: dict = {"": device}
    if gpus:
        device_map = shard_device_map(_location(source, need_weights=True), _gguf_kwargs(source, for_model=False),
                                      run or RunConfig(model=cfg), dtype, TORCH_DTYPES[dtype], gpus,
                                      "none" if source.gguf_file else cfg.quantize)  # .gguf: loaded full first
    model = _load_weights(source, device_map, TORCH_DTYPES[dtype], cfg.quantize)
    model.requires_grad_(False)
    model.eval()
    return LoadedModel(model, tokenizer, source, describe(model, source, dtype, device, cfg.quantize))


def dequantizes_gguf(cfg: ModelConfig) -> bool:
    """Whether loading ``cfg`` turns a .gguf into weights: its one slow load, before the
    dequantized copy is kept (sharded loads always read the .gguf)."""
    source = resolve_source(cfg.name)
    if not source.gguf_file:
        return False
    _, dtype, gpus = _device_and_dtype(cfg)
    return bool(gpus) or gguf_cache.cached(source, str(TORCH_DTYPES[dtype]).removeprefix("torch.")) is None


def model_info(cfg: ModelConfig, run: RunConfig | None = None) -> ModelInfo:
    """What ``load_model(cfg).info`` says, without reading the weights when it can: the
    model is built from its config on the meta device (shapes, no memory), so "Load model
    info" takes a second instead of a full load. A quantized or sharded load, whose sizes
    depend on the loading itself, and any config this path cannot build, load for real."""
    source = resolve_source(cfg.name)
    device, dtype, gpus = _device_and_dtype(cfg)
    if cfg.quantize == "none" and not gpus:
        try:
            return _describe_from_config(source, dtype, device)
        except Exception:  # noqa: BLE001 - the real load below reports what is wrong, readably
            pass
    return load_model(cfg, run=run).info


def read_config(source: ModelSource):
    """The model's transformers config, without its weights. A .gguf's is read from the
    dequantized copy when one is kept: parsing the .gguf reads its whole tokenizer too
    (seconds for a 49k vocabulary)."""
    from transformers import AutoConfig

    if source.gguf_file and (copy := gguf_cache.any_weights(source)):
        return AutoConfig.from_pretrained(str(copy))
    return AutoConfig.from_pretrained(_location(source, need_weights=False), **_gguf_kwargs(source, for_model=False))


def _describe_from_config(source: ModelSource, dtype: str, device: str) -> ModelInfo:
    from transformers import AutoModelForCausalLM

    config = read_config(source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=TORCH_DTYPES[dtype])
    return msgspec.structs.replace(describe(model, source, dtype, device, "none"), devices=[device])


def _load_weights(source: ModelSource, device_map: dict, dtype: torch.dtype, quantize: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    location = _location(source, need_weights=True)
    device = device_map.get("")  # None when sharded: each linear stays on its own GPU
    kwargs: dict = {"dtype": dtype, "device_map": device_map, **_gguf_kwargs(source, for_model=True)}
    if quantize != "none" and not source.gguf_file:
        kwargs["quantization_config"] = bnb_config(quantize, dtype)
    # a .gguf loaded on one device once is read from its dequantized copy after that
    copy = str(dtype).removeprefix("torch.") if device is not None else None
    try:
        model = None
        if copy:
            model = _from_gguf_cache(source, copy, lambda folder: AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, device_map=device_map))
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
            if source.gguf_file:
                drop_gguf_marker(model)
                if copy:
                    gguf_cache.keep(source, copy, model.save_pretrained, nbytes=_bytes(model))
        if source.gguf_file and quantize != "none":
            quantize_in_place(model, quantize, dtype, device)
    except UserError:
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise _other_load_error(source, exc, quantize, device) from None
        raise _load_oom_error(source, exc, dtype, quantize, device_map) from None
    return model


def _from_gguf_cache(source: ModelSource, part: str, load):
    """``load(folder)`` of the kept dequantized copy of a .gguf's ``part`` (models/gguf_cache.py),
    or None: not a .gguf, no copy yet, or a copy that no longer loads (dropped, so the .gguf
    is read again and copied anew)."""
    folder = gguf_cache.cached(source, part) if source.gguf_file else None
    if folder is None:
        return None
    try:
        return load(str(folder))
    except Exception as exc:  # noqa: BLE001 - the .gguf itself is the fallback
        if is_out_of_memory(exc):
            raise
        gguf_cache.drop(source, part)
        return None


def _bytes(model: nn.Module) -> int:
    """What the weights and buffers take in memory (tied weights once)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


# What torch, the CUDA runtime, cuBLAS and bitsandbytes say when memory runs out.
OOM_TEXTS = ("out of memory", "cublas_status_alloc_failed", "cudaerrormemoryallocation",
             "cuda_error_out_of_memory", "not enough memory", "defaultcpuallocator: can't allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, (RuntimeError, OSError, ValueError)) and any(t in str(exc).lower() for t in OOM_TEXTS)


def _load_oom_error(source: ModelSource, exc: Exception, dtype: torch.dtype, quantize: str,
                    device_map: dict) -> UserError:
    """Out of memory while the weights load: say so, with what would make them fit."""
    dtype_name = next(k for k, v in TORCH_DTYPES.items() if v == dtype)
    devices = sorted({f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values()})
    on_gpu = any(d.startswith("cuda") for d in devices)
    where = " + ".join(devices) if on_gpu else "the CPU (system memory)"
    remedies = []
    if dtype_name == "fp32":
        remedies.append("--dtype bf16 (or fp16): half the memory of fp32")
    if quantize != "4bit" and on_gpu:
        remedies.append("--quantize 4bit: about a quarter of bf16")
    if on_gpu:
        remedies.append(f"--shard-gpus N to give each GPU a smaller share (now {len(devices)})")
        remedies.append("close other programs using the GPU")
    remedies.append("a smaller model")
    base = f", {quantize} base" if quantize != "none" else ""
    return UserError(f"out of memory while loading model {_what(source)} ({dtype_name}{base}) on {where}: "
                     f"{_first_line(exc)}", "; ".join(remedies))


def _other_load_error(source: ModelSource, exc: Exception, quantize: str, device: str | None) -> Exception:
    if isinstance(exc, (OSError, ValueError, KeyError)) or source.gguf_file:  # a damaged .gguf: any error
        return _load_error(source, exc)
    if not isinstance(exc, (RuntimeError, NotImplementedError)):
        return exc
    if quantize == "none":
        return _load_error(source, exc)
    where = device or "the GPUs of the shard"
    return UserError(f"could not load the model in {quantize} on {where}: {_first_line(exc)}",
                     "bitsandbytes may not support this device; use --quantize none")


def drop_gguf_marker(model: nn.Module) -> None:
    """GGUF weights arrive dequantized; a leftover quantizer marker only blocks save_pretrained."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def describe(model: nn.Module, source: ModelSource, dtype: str, device: str, quantize: str) -> ModelInfo:
    layers_path, layers = find_layers(model)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return ModelInfo(
        name=source.display_name,
        architecture=str(getattr(model.config, "model_type", type(model).__name__)),
        n_layers=len(layers),
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
        vocab_size=int(getattr(config, "vocab_size", 0) or 0),
        n_params=sum(logical_numel(p) for p in model.parameters()),
        dtype=dtype, device=device, quantization=quantize,
        weight_bytes=_bytes(model),
        layers_path=layers_path,
        targets=target_names(model),
        devices=list(dict.fromkeys([str(model.get_input_embeddings().weight.device),
                                    *(str(p.device) for p in model.parameters())])),
    )
