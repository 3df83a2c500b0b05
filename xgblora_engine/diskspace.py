"""A full disk, told as what it is: which folder, how much is free, how much more is needed.

Every write of a run is atomic (fileio.py, checkpoint.py), so a disk that fills up mid-way
leaves the last good checkpoint as it was: the message can say so, and that the run
resumes once space is freed.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xgblora_engine.errors import UserError
from xgblora_engine.memory.units import human_bytes

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Writers in other languages (safetensors) report the OS error in their text only.
FULL_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")
MIN_HEADROOM = 64 * 2**20  # logs, status and a few checkpoints of a small run


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return any(t in text for t in FULL_TEXTS)


def free_bytes(path: str | Path) -> int:
    """Free space on the filesystem that will hold ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def folder_size(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk_full_error(folder: str | Path, needed: int, then: str) -> UserError:
    free = free_bytes(folder)
    return UserError(f"the disk holding {folder} is full ({human_bytes(free)} free); about {human_bytes(needed)} "
                     "free are needed to go on",
                     f"free at least {human_bytes(needed)} on that disk, then {then}")


def resume_hint(run_path: Path) -> str:
    return f"resume with `xgblora resume {run_path}`: the last checkpoint is intact"


def run_space_needed(run_path: Path) -> int:
    """Room for two checkpoints (the next is written before the oldest is pruned) and the logs."""
    checkpoints = sorted((run_path / "checkpoints").glob("step-*"))
    newest = folder_size(checkpoints[-1]) if checkpoints else folder_size(run_path / "ledger.safetensors")
    return max(MIN_HEADROOM, 3 * newest)


@contextmanager
def reported_as_disk_full(folder: str | Path, needed, then: str) -> Iterator[None]:
    """Turn a full-disk error inside the block into a UserError about ``folder``;
    ``needed`` is called (lazily) for the free space to ask for."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise disk_full_error(folder, needed(), then) from None
