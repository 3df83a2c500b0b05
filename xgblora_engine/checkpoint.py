"""Resumable snapshots of a run, taken at round boundaries and when a Stop cuts a round short.

At a round boundary no booster is live, so the whole training state is small: the
booster ledger, the step, the data stream position and the RNG states. A Stop inside a
round adds the round in progress (its boosters' A, B and Adam state, ``live.safetensors``)
so that a resume continues it where it stopped. Each checkpoint
is a folder written under a temporary name with a manifest of SHA-256 checksums and
renamed into place, so a killed process or a full disk leaves either the complete
folder or none. The last ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xgblora_engine.boosting.carry import CarryStore
from xgblora_engine.boosting.ledger import BoosterLedger
from xgblora_engine.errors import UserError
from xgblora_engine.fileio import atomic_write_json, fsync_dir

MANIFEST = "manifest.json"
CARRIED = "carried.safetensors"  # boost.carry: each module's last A and Adam moments
LIVE = "live.safetensors"  # a round a Stop cut short: its boosters and their Adam state


@dataclass
class Checkpoint:
    path: Path
    step: int
    round: int
    ledger: BoosterLedger
    stream_state: dict
    rng_state: torch.Tensor
    cuda_rng_states: list[torch.Tensor]
    last_loss: float | None
    last_eval_loss: float | None
    carried: CarryStore
    live: CarryStore = field(default_factory=CarryStore)
    live_lr_factor: float = 1.0

    @property
    def live_round(self) -> int:
        """The round ``live`` continues (0: the checkpoint is at a round boundary)."""
        return self.round if self.live else 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encode_rng(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def _decode_rng(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def save_checkpoint(root: Path, step: int, round_index: int, ledger: BoosterLedger, stream_state: dict,
                    last_loss: float | None, last_eval_loss: float | None, keep: int = 3,
                    carried: CarryStore | None = None, live: CarryStore | None = None,
                    live_lr_factor: float = 1.0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        ledger.save(tmp / "ledger.safetensors")
        if carried:
            carried.save(tmp / CARRIED)
        if live:
            live.save(tmp / LIVE)
        cuda = [_encode_rng(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
        atomic_write_json(tmp / "state.json", {
            "step": step, "round": round_index, "stream": stream_state, "last_loss": last_loss,
            "last_eval_loss": last_eval_loss, "rng": _encode_rng(torch.get_rng_state()), "cuda_rng": cuda,
            "live_lr_factor": live_lr_factor})
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        atomic_write_json(tmp / MANIFEST, {"files": files, "step": step})
        fsync_dir(tmp)  # its files' names are durable before the folder is published
        if final.exists():  # the same step saved twice (a save request at a boundary)
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*"):  # temp folders of an interrupted save
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []


def verify(path: Path) -> str | None:
    """None if the checkpoint is complete and intact, else what is wrong with it."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "its manifest is missing or unreadable"
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} is damaged (checksum mismatch)"
    return None


def load_checkpoint(path: Path) -> Checkpoint:
    problem = verify(path)
    if problem:
        raise UserError(f"checkpoint {path} is corrupt: {problem}", "resume from an earlier checkpoint")
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    carried = CarryStore.load(path / CARRIED) if (path / CARRIED).is_file() else CarryStore()
    live = CarryStore.load(path / LIVE) if (path / LIVE).is_file() else CarryStore()
    return Checkpoint(path, state["step"], state["round"], BoosterLedger.load(path / "ledger.safetensors"),
                      state["stream"], _decode_rng(state["rng"]), [_decode_rng(s) for s in state["cuda_rng"]],
                      state["last_loss"], state["last_eval_loss"], carried, live, state.get("live_lr_factor", 1.0))


def latest_valid(root: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest intact checkpoint, and a note for each newer one that was skipped."""
    skipped = []
    for path in reversed(list_checkpoints(root)):
        problem = verify(path)
        if problem is None:
            return load_checkpoint(path), skipped
        skipped.append(f"{path.name}: {problem}")
    return None, skipped


def restore_rng(checkpoint: Checkpoint) -> None:
    torch.set_rng_state(checkpoint.rng_state)
    if checkpoint.cuda_rng_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint.cuda_rng_states)
