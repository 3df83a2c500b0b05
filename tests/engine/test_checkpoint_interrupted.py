"""A checkpoint write interrupted at any file-system operation leaves the previous
checkpoint or the new one, complete and checksummed; and every publishing rename is
followed by a sync of its folder."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from xgblora_engine import checkpoint as C
from xgblora_engine import fileio
from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord


def ledger_with(rounds: int) -> BoosterLedger:
    ledger = BoosterLedger()
    for r in range(rounds):
        torch.manual_seed(r)
        ledger.record_round(RoundRecord(r, 2 * (r + 1), [r]), {
            f"model.layers.{r}.q": (torch.randn(2, 8), torch.randn(8, 2), 0.5)})
    return ledger


def save(root: Path, step: int):
    return C.save_checkpoint(root, step, step // 2, ledger_with(step // 2), {"epoch": 0, "position": step},
                             0.1 * step, None, keep=2)


class Interrupted(BaseException):
    """Stands for the process dying: nothing after it runs, not even cleanup."""


# Every operation a checkpoint write makes on the file system, hooked where the code calls it.
HOOKS = [(os, "replace"), (os, "fsync"), (os, "open"), (os, "close"), (Path, "rename"), (Path, "mkdir"),
         (Path, "write_text"), (Path, "unlink"), (tempfile, "mkstemp"), (tempfile, "mkdtemp"), (shutil, "rmtree")]


class Tripwire:
    """Counts the hooked operations and, at the ``at``-th, copies the folder as a killed
    process would leave it (before that operation), then interrupts."""

    def __init__(self, monkeypatch, root: Path, snapshot: Path, at: int | None) -> None:
        self.count, self.root, self.snapshot, self.at = 0, root, snapshot, at
        for owner, name in HOOKS:
            monkeypatch.setattr(owner, name, self.wrap(getattr(owner, name)))

    def wrap(self, real):
        def hooked(*args, **kwargs):
            self.count += 1
            if self.count == self.at:
                self.at = None  # the copy below uses these functions too
                shutil.copytree(self.root, self.snapshot)
                raise Interrupted
            return real(*args, **kwargs)

        return hooked


def count_operations(tmp_path, monkeypatch) -> int:
    root = tmp_path / "count" / "checkpoints"
    save(root, 2)
    save(root, 4)
    with monkeypatch.context() as m:
        tripwire = Tripwire(m, root, tmp_path / "unused", None)
        save(root, 6)
    return tripwire.count


def test_a_checkpoint_write_interrupted_anywhere_leaves_the_old_or_the_new_one(tmp_path, monkeypatch):
    total = count_operations(tmp_path, monkeypatch)
    assert total >= 20, f"only {total} operations: the test would cover too few moments"
    for at in range(1, total + 1):
        root = tmp_path / f"run-{at}" / "checkpoints"
        save(root, 2)
        save(root, 4)
        snapshot = tmp_path / f"killed-{at}"
        with monkeypatch.context() as m:
            Tripwire(m, root, snapshot, at)
            with pytest.raises(Interrupted):
                save(root, 6)
        newest, _ = C.latest_valid(snapshot)
        assert newest is not None and newest.step in (4, 6), f"interrupted at operation {at}"
        assert C.verify(newest.path) is None
        assert len(newest.ledger.rounds) == newest.step // 2
        assert newest.stream_state == {"epoch": 0, "position": newest.step}


def test_publishing_renames_are_followed_by_a_sync_of_their_folder(tmp_path, monkeypatch):
    if os.name != "posix":
        pytest.skip("folders are synced on POSIX only")
    synced_dirs, log = [], []
    real_fsync_dir = fileio.fsync_dir

    def recording(folder):
        synced_dirs.append(Path(folder))
        log.append(("sync", Path(folder)))
        real_fsync_dir(folder)

    real_rename, real_replace = Path.rename, os.replace
    monkeypatch.setattr(fileio, "fsync_dir", recording)
    monkeypatch.setattr(C, "fsync_dir", recording)
    monkeypatch.setattr(Path, "rename", lambda self, t: (log.append(("rename", Path(t).parent)), real_rename(self, t))[1])
    monkeypatch.setattr(os, "replace", lambda s, t: (log.append(("rename", Path(t).parent)), real_replace(s, t))[1])
    final = save(tmp_path / "checkpoints", 2)
    renames = [i for i, (kind, _) in enumerate(log) if kind == "rename"]
    assert renames, "nothing was published"
    for i in renames:  # each rename's folder is synced before anything else is renamed
        folder = log[i][1]
        assert ("sync", folder) in log[i + 1:i + 2], f"rename into {folder} not followed by a sync"
    assert final.parent in synced_dirs


def test_fsync_dir_is_skipped_where_folders_cannot_be_opened(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "name", "nt")
    opened = []
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a))
    fileio.fsync_dir(tmp_path)
    assert opened == []
