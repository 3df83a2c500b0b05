"""The merged model of a run, rebuilt from the original checkpoint and the fp32 ledger.

Never from the training process's (possibly bf16 or 4-/8-bit) in-memory copy: the base
is reloaded unquantized in fp32 and each ledger module's update ``Σ scaling·B·A`` is
added to its weight in fp32, one module at a time. Only one copy of the model plus one
module's update is ever held, so merging needs the model's fp32 size in RAM, not twice it.
The result is bit-identical to the trainer's rebuild merge (``cast(W0 + delta)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xgblora_engine.export.common import Progress, no_progress


@dataclass
class RunInfo:
    run: object  # rundir.RunDir
    cfg: object  # config.RunConfig
    ledger: object  # boosting.ledger.BoosterLedger
    status: dict


def open_run(run_dir: str | Path) -> RunInfo:
    from xgblora_engine.boosting.ledger import BoosterLedger
    from xgblora_engine.config import RunConfig, load_config_file
    from xgblora_engine.rundir import RunDir

    run = RunDir.open(run_dir)
    cfg = RunConfig.from_dict(load_config_file(run.config_path))
    ledger = BoosterLedger.load(run.ledger_path)
    return RunInfo(run, cfg, ledger, run.status())


def base_config(cfg):
    """The run's model settings for export: the original checkpoint, unquantized, fp32, CPU
    (not sharded, even when the run was)."""
    import copy

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.quantize, model_cfg.dtype, model_cfg.device, model_cfg.shard_gpus = "none", "fp32", "cpu", 1
    return model_cfg


def load_base(cfg):
    """(model, tokenizer, source) of the run's base at full precision."""
    from xgblora_engine.models.loading import load_model

    loaded = load_model(base_config(cfg))
    return loaded.model, loaded.tokenizer, loaded.source


def merge_in_place(model, ledger, progress: Progress = no_progress, fmt: str = "merge") -> None:
    """W ← W + Σ scaling·B·A for every ledger module, in fp32, module by module."""
    import torch

    from xgblora_engine.boosting.merge import is_fan_in_fan_out

    modules = ledger.modules()
    with torch.no_grad():
        for i, name in enumerate(modules):
            module = ledger_module(model, name)
            if module.weight.dtype != torch.float32:
                raise RuntimeError(f"{name}: merging needs the fp32 base, got {module.weight.dtype}")
            add_update(module.weight, ledger, name, is_fan_in_fan_out(module))
            if i % 8 == 0 or i == len(modules) - 1:
                progress(fmt, "merging the booster ledger", (i + 1) / len(modules))


def ledger_module(model, name: str):
    """The module a ledger entry updates; a ledger from another model is a user error."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        from xgblora_engine.errors import UserError

        raise UserError(f"the ledger names a module the base model does not have: {name}",
                        "the run's config.yaml must point at the model the run was trained on") from None


def add_update(weight, ledger, name: str, fan_in_fan_out: bool) -> None:
    """weight += Σ scaling·B·A of module ``name``, in place, on an fp32 weight (stored in×out
    when ``fan_in_fan_out``). The one place the ledger reaches exported weights, so every
    export path adds exactly the same bits."""
    delta = ledger.delta(name, weight.device)
    weight.add_(delta.t() if fan_in_fan_out else delta)


def drop_quantizer_marker(model) -> None:
    """A model loaded from GGUF is flagged as quantized and refuses to save; its weights
    are already plain dequantized tensors, so the flag can go (the reload is exact)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def load_merged(run_dir: str | Path, dtype: str = "fp32"):
    """The run's base model rebuilt at full precision with the whole ledger merged in.

    Returns (model, tokenizer, run config)."""
    import torch

    from xgblora_engine.export.common import SAVE_DTYPES

    info = open_run(run_dir)
    model, tokenizer, _ = load_base(info.cfg)
    merge_in_place(model, info.ledger)
    if dtype != "fp32":
        model.to(getattr(torch, SAVE_DTYPES[dtype]))
    return model, tokenizer, info.cfg


def count_parameters(cfg) -> tuple[int | None, str]:
    """(unique parameter count, checkpoint dtype) of the run's base, from its config alone
    (the model is built on the meta device: no weights are read). (None, "fp32") when the
    config cannot be read this way; the caller then counts after loading."""
    import torch
    from transformers import AutoModelForCausalLM

    from xgblora_engine.models.loading import read_config
    from xgblora_engine.models.source import resolve_source

    try:
        config = read_config(resolve_source(cfg.model.name))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:
        return None, "fp32"
    n = sum(p.numel() for p in model.parameters())  # shared (tied) parameters once
    return n, dtype_of(config)


def dtype_of(config) -> str:
    original = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return {"torch.bfloat16": "bf16", "bfloat16": "bf16", "torch.float16": "fp16",
            "float16": "fp16"}.get(original, "fp32")
