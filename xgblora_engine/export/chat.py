"""Trying a model: greedy answers from a base model or a run's merged model, for the
terminal (`xgblora chat`) and for the worker (the app's try/chat panel).

A model is named the way training names one (``default``, a folder, a ``.gguf`` file, a
Hub id) or by a run folder, which means that run's merged model (rebuilt from the base
and the ledger, as export does). Loaded models are kept in a small cache, so comparing
base and fine-tuned answers prompt after prompt loads each model once.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xgblora_engine.errors import UserError
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


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0  # with temperature > 0: the same seed, the same answer

    def validate(self) -> Sampling:
        if self.max_new_tokens < 1:
            raise UserError(f"invalid answer length {self.max_new_tokens}", "use 1 or more new tokens, e.g. 256")
        if not 0 <= self.temperature <= 10:
            raise UserError(f"invalid temperature {self.temperature}", "use 0 (greedy) to 2; 0.7 is a common choice")
        if not 0 < self.top_p <= 1:
            raise UserError(f"invalid top-p {self.top_p}", "use a value in (0, 1], e.g. 0.9")
        return self


@dataclass
class Answer:
    text: str
    tokens: int
    seconds: float
    first_token_s: float | None  # from the call to the first new token (what a user waits for)
    finish: str  # "end_of_turn", "length" or "stopped" (should_stop said so)

    @property
    def stopped(self) -> bool:
        """Ended at its end-of-turn token (a complete answer)."""
        return self.finish == "end_of_turn"


def generate(model_spec_or_run_dir: str | Path, conversation: str | list[dict[str, str]],
             sampling: Sampling | None = None, system: str | None = None,
             on_text: Callable[[str], None] | None = None, should_stop: Callable[[], bool] | None = None) -> Answer:
    """The model's answer to a conversation (one user turn, or {role, content} turns that
    end with the user's), rendered with its chat template. ``on_text`` receives the answer
    as it grows, piece by piece; ``should_stop`` is asked after every token."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    sampling = sampling or Sampling()
    model, tokenizer = get_model(model_spec_or_run_dir)
    ids = chat_ids(tokenizer, conversation, system)
    eot = end_of_turn_ids(tokenizer)
    device = next(model.parameters()).device
    started = time.perf_counter()
    stream = _TextStream(tokenizer, set(eot), on_text or (lambda text: None), started)
    asked = should_stop or (lambda: False)

    class _Asked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), asked(), dtype=torch.bool, device=input_ids.device)

    sample = sampling.temperature > 0
    if sample:
        torch.manual_seed(sampling.seed)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids], device=device), max_new_tokens=sampling.max_new_tokens,
                             do_sample=sample, temperature=sampling.temperature if sample else None,
                             top_p=sampling.top_p if sample else None, top_k=None,
                             eos_token_id=eot, pad_token_id=eot[0] if eot else None,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                             streamer=stream, stopping_criteria=StoppingCriteriaList([_Asked()]))
    seconds = time.perf_counter() - started
    new = out[0, len(ids):].tolist()
    finish = "end_of_turn" if new and new[-1] in eot else "stopped" if asked() else "length"
    text = tokenizer.decode([t for t in new if t not in eot], skip_special_tokens=True).strip()
    return Answer(text, len(new), seconds, stream.first_token_s, finish)


class _TextStream:
    """transformers' streamer protocol (put the prompt, then each new token; end): hands
    on the decoded answer's new text as it grows. A token that is part of a longer
    character is held until the character is whole."""

    def __init__(self, tokenizer, stop_ids: set[int], on_text: Callable[[str], None], started: float) -> None:
        self.tokenizer, self.stop_ids, self.on_text, self.started = tokenizer, stop_ids, on_text, started
        self.prompt_seen = False
        self.ids: list[int] = []
        self.sent = ""
        self.first_token_s: float | None = None

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() puts the prompt first
            self.prompt_seen = True
            return
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started
        self.ids += [t for t in value.reshape(-1).tolist() if t not in self.stop_ids]
        self._flush()

    def end(self) -> None:
        self._flush()

    def _flush(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        if text.endswith("\ufffd") or not text.startswith(self.sent) or len(text) == len(self.sent):
            return
        self.on_text(text[len(self.sent):])
        self.sent = text


COMMANDS_HELP = "/reset starts a new conversation, /system TEXT sets the system prompt, /exit quits (so does Ctrl-D)"


def chat_session(spec: str, prompt: str | None = None, compare: bool = False, sampling: Sampling | None = None,
                 system: str | None = None, stream=None, input_fn=None) -> None:
    """One prompt, or a conversation: every model keeps its own history, rendered with its
    chat template; answers are printed as they are generated, and Ctrl-C stops one.
    With ``compare``, every prompt is answered by the run's base model and by the run."""
    stream = stream or sys.stdout
    input_fn = input_fn or input
    sampling = sampling or Sampling()
    models: list[tuple[str, str]] = []
    if compare:
        if not is_run_dir(spec):
            raise UserError(f"--compare needs a run folder, and {spec} is not one",
                            "pass the folder `xgblora train` wrote, or drop --compare")
        models.append((f"base ({base_model_of(spec)})", base_model_of(spec)))
    models.append(("fine-tuned" if is_run_dir(spec) else str(spec), str(spec)))
    histories: dict[str, list[dict[str, str]]] = {name: [] for _, name in models}

    def answer(text: str) -> None:
        for label, name in models:
            turns = histories[name] + [{"role": "user", "content": text}]
            print(f"--- {label}", file=stream, flush=True)
            with _ctrl_c_stops() as interrupted:
                reply = generate(name, turns, sampling, system, on_text=lambda piece: print(
                    piece, end="", file=stream, flush=True), should_stop=interrupted.is_set)
            ends = {"end_of_turn": "end of turn", "length": "length limit", "stopped": "stopped"}
            print(f"\n    ({reply.tokens} tokens, {reply.seconds:.1f} s, first token after "
                  f"{reply.first_token_s or 0:.2f} s, {ends[reply.finish]})", file=stream, flush=True)
            histories[name] = turns + [{"role": "assistant", "content": reply.text}]

    if prompt is not None:
        answer(prompt)
        return
    print(f"type a message; {COMMANDS_HELP}", file=stream, flush=True)
    while True:
        try:
            text = input_fn("> ").strip()
        except EOFError:
            break
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            histories = {name: [] for name in histories}
            print("new conversation", file=stream, flush=True)
        elif text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            print(f"system prompt: {system or '(none)'}", file=stream, flush=True)
        elif text.startswith("/"):
            print(COMMANDS_HELP, file=stream, flush=True)
        elif text:  # an empty line is ignored, not a way out
            answer(text)


class _ctrl_c_stops:
    """While generating in the main thread, Ctrl-C ends the answer instead of the program."""

    def __enter__(self) -> threading.Event:
        self.flag = threading.Event()
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, lambda *_: self.flag.set())
        return self.flag

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
