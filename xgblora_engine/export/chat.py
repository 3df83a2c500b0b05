"""Trying a model: greedy answers from a base model or a run's merged model, for the
terminal (`xgblora chat`) and for the worker (the app's try/chat panel).

A model is named the way training names one (``default``, a folder, a ``.gguf`` file, a
Hub id) or by a run folder, which means that run's merged model (rebuilt from the base
and the ledger, as export does). Loaded models are kept in a small cache, so comparing
base and fine-tuned answers prompt after prompt loads each model once.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from xgblora_engine.export.common import chat_ids, end_of_turn_ids

CACHE_SIZE = 2  # base + fine-tuned
_cache: OrderedDict[str, tuple[object, object]] = OrderedDict()
_lock = threading.Lock()


def is_run_dir(spec: str | Path) -> bool:
    path = Path(spec)
    return path.is_dir() and (path / "run.json").is_file() and (path / "config.yaml").is_file()


def base_model_of(run_dir: str | Path) -> str:
    """The model name a run was trained on (what `chat --compare` shows as 'base')."""
    from xgblora_engine.config import RunConfig, load_config_file

    return RunConfig.from_dict(load_config_file(Path(run_dir) / "config.yaml")).model.name


def _key(spec: str | Path) -> str:
    if is_run_dir(spec):
        return "run:" + str(Path(spec).resolve())
    path = Path(str(spec)).expanduser()
    return "model:" + (str(path.resolve()) if path.exists() else str(spec).strip() or "default")


def _load(spec: str | Path):
    if is_run_dir(spec):
        from xgblora_engine.export.merged import load_merged

        model, tokenizer, _ = load_merged(spec)  # rebuilt in fp32 on the CPU, as export does
        return _to_best_device(model).eval(), tokenizer
    from xgblora_engine.config import ModelConfig
    from xgblora_engine.models.loading import load_model

    loaded = load_model(ModelConfig(name=str(spec)))
    return loaded.model.eval(), loaded.tokenizer


def _to_best_device(model):
    """Where the base model would run (a GPU when there is one, in its auto dtype)."""
    import torch

    from xgblora_engine.models.loading import TORCH_DTYPES, choose_dtype

    if not torch.cuda.is_available():
        return model
    dtype = choose_dtype("auto", "cuda", torch.cuda.is_bf16_supported())
    return model.to("cuda", TORCH_DTYPES[dtype])


def get_model(spec: str | Path):
    """(model, tokenizer), loading at most once while it stays among the last CACHE_SIZE used."""
    key = _key(spec)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        while len(_cache) >= CACHE_SIZE:  # free before loading: never one model too many
            _cache.popitem(last=False)
            gc.collect()
        _cache[key] = _load(spec)
        return _cache[key]


def clear_cache() -> None:
    with _lock:
        _cache.clear()
    gc.collect()


def generate(model_spec_or_run_dir: str | Path, prompt: str, max_new_tokens: int = 128,
             system: str | None = None) -> tuple[str, int, float, bool]:
    """Greedy answer to one user turn: (text, new tokens, seconds, stopped at an
    end-of-turn token rather than the length limit)."""
    import torch

    model, tokenizer = get_model(model_spec_or_run_dir)
    ids = chat_ids(tokenizer, prompt, system)
    eot = end_of_turn_ids(tokenizer)
    device = next(model.parameters()).device
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids], device=device), do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=eot, pad_token_id=eot[0] if eot else None,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                             temperature=None, top_p=None, top_k=None)
    seconds = time.perf_counter() - started
    new = out[0, len(ids):].tolist()
    stopped = bool(new) and new[-1] in eot
    text = tokenizer.decode(new, skip_special_tokens=True).strip()
    return text, len(new), seconds, stopped


def _show(label: str, result: tuple[str, int, float, bool], stream) -> None:
    text, n, seconds, stopped = result
    end = "stopped at end of turn" if stopped else "hit the length limit"
    print(f"--- {label} ({n} tokens, {seconds:.1f}s, {end})", file=stream)
    print(text, file=stream, flush=True)


def chat_session(spec: str, prompt: str | None = None, compare: bool = False, max_new_tokens: int = 128,
                 system: str | None = None, stream=None, input_fn=None) -> None:
    """One prompt, or an interactive loop (empty line, 'exit' or end of input quits).
    With ``compare``, every prompt is answered by the run's base model and by the run."""
    from xgblora_engine.errors import UserError

    stream = stream or sys.stdout
    input_fn = input_fn or input
    models: list[tuple[str, str]] = []
    if compare:
        if not is_run_dir(spec):
            raise UserError(f"--compare needs a run folder, and {spec} is not one",
                            "pass the folder `xgblora train` wrote, or drop --compare")
        models.append((f"base ({base_model_of(spec)})", base_model_of(spec)))
    models.append(("fine-tuned" if is_run_dir(spec) else str(spec), str(spec)))

    def answer(text: str) -> None:
        for label, name in models:
            _show(label, generate(name, text, max_new_tokens, system), stream)

    if prompt is not None:
        answer(prompt)
        return
    print("type a prompt (empty line or 'exit' to quit)", file=stream, flush=True)
    while True:
        try:
            text = input_fn("> ")
        except EOFError:
            break
        if text.strip() in ("", "exit", "quit"):
            break
        answer(text)
