"""Export a run as a merged Hugging Face checkpoint plain `transformers` can load.

The merged weights are rebuilt from the original checkpoint plus the fp32 ledger,
never from the training process's (possibly bf16 or quantized) in-memory copy. The
folder is written under a temporary name and renamed at the end, so an interrupted
export never leaves something that looks complete.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from xgblora_engine.errors import UserError

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
SAVE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def end_of_turn_ids(tokenizer) -> list[int]:
    """The eos id plus every end-of-turn marker the vocabulary has, so generation stops
    at the end of an assistant turn instead of rambling on."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
    return list(dict.fromkeys(ids))


def load_merged(run_dir: str | Path, dtype: str = "fp32"):
    """The run's base model rebuilt at full precision with the whole ledger merged in.

    Returns (model, tokenizer, run config)."""
    import torch

    from xgblora_engine.boosting.ledger import BoosterLedger
    from xgblora_engine.boosting.merge import Merger
    from xgblora_engine.config import RunConfig, load_config_file
    from xgblora_engine.models.loading import load_model
    from xgblora_engine.rundir import RunDir

    run = RunDir.open(run_dir)
    cfg = RunConfig.from_dict(load_config_file(run.config_path))
    cfg.model.quantize, cfg.model.dtype, cfg.model.device = "none", "fp32", "cpu"
    loaded = load_model(cfg.model)
    ledger = BoosterLedger.load(run.ledger_path)
    Merger(loaded.model).apply_ledger(ledger)
    if dtype != "fp32":
        loaded.model.to(getattr(torch, SAVE_DTYPES[dtype]))
    return loaded.model, loaded.tokenizer, cfg


def export_hf(run_dir: str | Path, out: str | Path, dtype: str = "auto",
              log: Callable[[str], None] = lambda _: None) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"export folder {out} exists and is not empty", "choose a new --out; nothing was overwritten")
    log("rebuilding merged weights from the original checkpoint and the booster ledger")
    model, tokenizer, _ = load_merged(run_dir, "fp32")
    save_dtype = _resolve_dtype(model, dtype)
    if save_dtype != "fp32":
        import torch

        model.to(getattr(torch, SAVE_DTYPES[save_dtype]))
    _drop_quantizer_marker(model)
    model.generation_config.eos_token_id = end_of_turn_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="2GB")
        tokenizer.save_pretrained(tmp)
        _make_readable(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"saved {save_dtype} safetensors, tokenizer, chat template and generation config")
    return out


def _make_readable(folder: Path) -> None:
    """mkdtemp makes a private folder; an exported model is meant to be shared."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _resolve_dtype(model, dtype: str) -> str:
    if dtype != "auto":
        return dtype
    original = str(getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", "float32"))
    return {"torch.bfloat16": "bf16", "bfloat16": "bf16", "torch.float16": "fp16", "float16": "fp16"}.get(original, "fp32")


def _drop_quantizer_marker(model) -> None:
    """A model loaded from GGUF is flagged as quantized and refuses to save; its weights
    are already plain dequantized tensors, so the flag can go (the reload is exact)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
