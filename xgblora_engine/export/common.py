"""What every export format shares: results and checks, progress, the staging folder that
makes an export atomic, the free-disk check, dtypes and the end-of-turn tokens."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xgblora_engine.diskspace import free_bytes, is_disk_full
from xgblora_engine.errors import UserError
from xgblora_engine.fileio import file_in_the_way, fsync_dir, fsync_tree
from xgblora_engine.memory.units import human_bytes
from xgblora_engine.payloads import ExportCheck as Check

FORMATS = ("hf", "peft", "gguf", "ollama")
SAVE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

# progress(format, stage, fraction in [0, 1]); the worker turns it into ExportProgress events.
Progress = Callable[[str, str, float], None]


def no_progress(fmt: str, stage: str, fraction: float) -> None:
    pass



@dataclass
class ExportResult:
    format: str
    path: str
    ok: bool
    checks: list[Check] = field(default_factory=list)
    message: str = ""
    command: str = ""  # what the user runs next (ollama create …), if anything

    def to_event(self):
        from xgblora_engine import protocol as P

        return P.ExportDone(format=self.format, path=self.path, ok=self.ok, checks=self.checks,
                            message=self.message, command=self.command)


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def dtype_name(torch_dtype) -> str:
    """fp32 / bf16 / fp16 for a torch dtype (its name otherwise)."""
    name = str(torch_dtype).replace("torch.", "")
    return {v: k for k, v in SAVE_DTYPES.items()}.get(name, name)


def end_of_turn_ids(tokenizer) -> list[int]:
    """The eos id plus every end-of-turn marker the vocabulary has, so generation stops
    at the end of an assistant turn instead of rambling on."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
    return list(dict.fromkeys(ids))


def chat_ids(tokenizer, prompt: str | list[dict[str, str]], system: str | None = None) -> list[int]:
    """Token ids of a conversation (one user turn, or a list of {role, content} turns)
    ending in the assistant's generation prompt, rendered with the tokenizer's own chat
    template; without a template, the turns' text one after another."""
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    messages = ([{"role": "system", "content": system}] if system else []) + turns
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer("\n".join(m["content"] for m in turns))["input_ids"])


def release_memory() -> None:
    """Collect, then hand freed heap memory back to the OS (glibc keeps it otherwise, and the
    next model loaded would sit on top of it)."""
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


# --- the staging folder -------------------------------------------------------
def check_out_free(out: Path) -> None:
    blocker = file_in_the_way(out.parent)
    if blocker is not None:
        raise UserError(f"cannot create the export folder {out}: {blocker} is a file, not a folder",
                        "choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"export folder {out} exists and is not empty",
                        "choose a new --out; nothing was overwritten")


class Staging:
    """A hidden ``.NAME.partial-XXXX`` folder beside ``out``, renamed to ``out`` only when
    the export is complete (and verified). Anything interrupted stays under the hidden
    name, so nothing that looks like a finished export is ever left half-written."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        except OSError as exc:
            if is_disk_full(exc):
                raise
            raise UserError(f"cannot create the export folder {self.out}: {exc.strerror or exc}",
                            "choose a folder you can write to with --out") from None

    def commit(self) -> Path:
        check_out_free(self.out)
        make_readable(self.path)
        if self.out.exists():
            self.out.rmdir()
        fsync_tree(self.path)
        os.replace(self.path, self.out)
        fsync_dir(self.out.parent)
        return self.out

    @property
    def failed_path(self) -> Path:
        return self.out.with_name(self.out.name + ".FAILED-VERIFICATION")

    def keep_as_failed(self) -> Path:
        """A failed verification: keep the files for inspection under a name that says so."""
        target = self.failed_path
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        make_readable(self.path)
        os.replace(self.path, target)
        return target

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def make_readable(folder: Path) -> None:
    """mkdtemp makes a private folder (and some writers make private files); an exported
    model is meant to be shared like any file the user creates."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


# --- free disk space ------------------------------------------------------------
def check_disk(out: Path, needed: int, what: str) -> None:
    free = free_bytes(out)
    if needed * 1.05 + 50e6 > free:
        raise UserError(f"not enough free disk space for the export: {what} needs about "
                        f"{human_bytes(needed)}, {human_bytes(free)} are free on the disk of {out}",
                        "free some space or choose another --out on a larger disk; nothing was written")

