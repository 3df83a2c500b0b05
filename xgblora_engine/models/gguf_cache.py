"""A .gguf base, dequantized once and kept as safetensors.

transformers takes about 20 s to turn the embedded 135M model's .gguf file into a model and
a tokenizer (it dequantizes every tensor and converts the vocabulary); the same model saved
as safetensors loads in under a second. So the first load of a .gguf file keeps what it
built in the user's cache, and later loads of that file read the copy: the same weights to
the bit (a copy per dtype, so bf16 is cast from the same values), the same tokenizer and
chat template. A copy is written under a temporary name, synced and renamed, so a load
never reads half of one; a copy that fails to load is dropped and the .gguf read again.
Only copies up to ``MAX_BYTES`` are kept: a dequantized 7B model would take 28 GB of disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

MAX_BYTES = 4 * 2**30
SPARE_DISK = 2**30  # left free on the disk after a copy


def cache_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("xgblora-studio", appauthor=False)) / "gguf-bases"


def _folder(source, part: str) -> Path:
    """Where ``part`` ("tokenizer", or a dtype's weights) of this exact file is kept: the
    file's path, size and modification time name it, so a changed file gets a new copy."""
    import transformers

    file = (Path(source.path) / source.gguf_file).resolve()
    stat = file.stat()
    key = f"{file}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return cache_root() / f"{file.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}" / part


def cached(source, part: str) -> Path | None:
    """The kept copy of ``part``, if there is one."""
    try:
        folder = _folder(source, part)
    except OSError:
        return None
    return folder if folder.is_dir() else None


def any_weights(source) -> Path | None:
    """A kept copy of the weights in any dtype: its config.json is the model's config."""
    return next(filter(None, (cached(source, part) for part in ("float32", "bfloat16", "float16"))), None)


def drop(source, part: str) -> None:
    shutil.rmtree(_folder(source, part), ignore_errors=True)


def keep(source, part: str, save: Callable[[Path], None], nbytes: int) -> None:
    """Keep a copy of ``part``, written by ``save(folder)``. Best effort: the load it copies
    has already succeeded, so a copy that cannot be made (no room, a read-only cache, another
    process that was faster) is skipped without a word."""
    if nbytes > MAX_BYTES:
        return
    try:
        dest = _folder(source, part)
        if dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(dest.parent).free < nbytes + SPARE_DISK:
            return
    except OSError:
        return
    tmp = dest.parent / f".{part}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir()
        save(tmp)
        _sync(tmp)
        os.replace(tmp, dest)  # fails if another process renamed its copy first
    except Exception:  # noqa: BLE001 - see the docstring
        shutil.rmtree(tmp, ignore_errors=True)
        return
    _drop_stale(dest.parent)


def _drop_stale(current: Path) -> None:
    """Copies of an earlier version of the same file (or of another transformers): one copy
    per file name is kept, so the cache does not grow with every update."""
    stem = current.name.rsplit("-", 1)[0]
    for other in current.parent.glob(f"{stem}-*"):
        if other != current and other.name.rsplit("-", 1)[0] == stem:
            shutil.rmtree(other, ignore_errors=True)


def _sync(folder: Path) -> None:
    for file in folder.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
