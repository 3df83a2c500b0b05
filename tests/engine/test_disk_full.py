"""A disk that fills up at any point of a run: one clear message naming the folder and the
space needed, the last good checkpoint intact, and the run resumable once space is freed."""

import copy
import errno
import shutil
import subprocess

import pytest
import torch

from xgblora_engine import protocol as P
from xgblora_engine.boosting.ledger import BoosterLedger
from xgblora_engine.checkpoint import list_checkpoints, verify
from xgblora_engine.diskspace import is_disk_full
from xgblora_engine.errors import UserError
from xgblora_engine.session import resume_training, run_training


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs of our own (root can mount one; elsewhere the test is skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave: int):
    """Take all the free space of ``disk`` but ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
    return filler


def ledger_of(path):
    return BoosterLedger.load(path / "ledger.safetensors")


# Room for the run's settings only, then for a few events, for the first checkpoint, for
# two: the disk fills up during start-up, logging, checkpointing and the ledger write.
@pytest.mark.parametrize("leave_kb", [0, 4, 12, 24, 48, 72, 100, 140])
def test_a_full_disk_stops_the_run_cleanly_and_it_resumes(tmp_path, small_disk, tiny_config, leave_kb):
    reference = run_training(copy.deepcopy(tiny_config), str(tmp_path / "reference"), lambda e: None).path
    run = small_disk / "run"
    filler = fill(small_disk, leave_kb * 1024)
    events = []
    try:
        run_training(copy.deepcopy(tiny_config), str(run), events.append)
        finished = True
    except UserError as exc:
        finished = False
        assert f"the disk holding {run} is full" in exc.message and "free are needed" in exc.message
        assert "free at least" in exc.hint
    for checkpoint in list_checkpoints(run / "checkpoints"):
        assert verify(checkpoint) is None, "a checkpoint on the full disk is damaged"
    filler.unlink()
    if not finished:
        if (run / "config.yaml").exists():
            resume_training(str(run), events.append)
        else:  # the settings themselves did not fit: the same command again
            run_training(copy.deepcopy(tiny_config), str(run), events.append)
    assert isinstance(events[-1], P.Finished) and events[-1].status == "completed"
    a, b = ledger_of(reference), ledger_of(run)
    assert [r.layers for r in a.rounds] == [r.layers for r in b.rounds]
    assert all(torch.equal(x.B, y.B) for x, y in zip(a.entries, b.entries))


def test_full_disk_errors_are_recognised_from_python_and_from_native_writers():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_the_worker_reports_a_full_disk_as_a_user_error_not_a_bug(tmp_path):
    from xgblora_engine.worker import Worker

    class Events(list):
        def put(self, data):
            self.append(P.decode_event(data))

    worker = Worker(None, Events())

    def writes_to_a_full_disk(cmd):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "events.jsonl"))

    worker.do_ResumeRun = writes_to_a_full_disk
    worker.run_command(P.ResumeRun(run_dir=str(tmp_path / "run")))
    [error] = [e for e in worker.evt_q if isinstance(e, P.Error)]
    assert error.kind == "user" and "internal error" not in error.message and "bug" not in error.hint
    assert f"the disk holding {tmp_path / 'run'} is full" in error.message
