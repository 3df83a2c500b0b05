"""A run killed (SIGKILL of every process it started) at any moment, start-up included,
leaves a folder that resumes, or that `xgblora train` takes again, to the same result."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import torch

from xgblora_engine.boosting.ledger import BoosterLedger

pytestmark = pytest.mark.slow

KILLS = 8  # moments: four during start-up, four spread to past the last checkpoint
MARK = "XGBLORA_KILL_TEST"
# Two kills run at once, each process on one thread: the machine has two cores.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def cli(*args):
    return [sys.executable, "-m", "xgblora_engine.cli", *args]


def train_args(model, data, out):
    return ["train", "--model", str(model), "--data", str(data), "--max-steps", "6", "--merge-every", "2",
            "--layers-per-round", "2", "--rank", "2", "--lr", "0.01", "--seq-len", "32", "--eval-every", "0",
            "--batch-size", "2", "--out", str(out)]


def run_to_end(args):
    result = subprocess.run(cli(*args), capture_output=True, text=True, timeout=900, env=ENV)
    return result.returncode, result.stderr


def start_marked(args):
    """The CLI in its own session, tagged so its worker (its own process group) is found too."""
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=dict(ENV, **{MARK: tag}))
    return proc, tag


def tagged(tag):
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(MARK) == tag:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def kill_all(proc, tag):
    """SIGKILL the CLI's process group, then every process it started, until none is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 30
    while (left := tagged(tag)) and time.monotonic() < deadline:
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=2)
    assert not tagged(tag), "a process of the killed run survived"


def recover(model, data, out):
    """What a user does after a kill: resume; if the folder is not resumable, train into it again."""
    code, err = run_to_end(["resume", str(out)])
    if code == 2 and ("not a run folder" in err or "before its settings were written" in err):
        code, err = run_to_end(train_args(model, data, out))
    assert code == 0, err[-3000:]


def losses(run):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["loss"]) for m in lines if "loss" in m]


def kill_and_recover(model, data, out, delay):
    proc, tag = start_marked(train_args(model, data, out))
    time.sleep(delay)
    kill_all(proc, tag)
    recover(model, data, out)
    return out


def same_ledger(a, b):
    la, lb = BoosterLedger.load(a / "ledger.safetensors"), BoosterLedger.load(b / "ledger.safetensors")
    assert [r.layers for r in la.rounds] == [r.layers for r in lb.rounds]
    assert all(torch.equal(x.A, y.A) and torch.equal(x.B, y.B) for x, y in zip(la.entries, lb.entries))


def test_a_run_killed_at_any_moment_resumes_to_the_same_result(tmp_path, tiny_model_dir, tiny_data):
    # Two reference runs side by side, as the kills will run: the duration is the one the
    # kills see, and the two must agree.
    references = [tmp_path / "reference-a", tmp_path / "reference-b"]
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda out: run_to_end(train_args(tiny_model_dir, tiny_data, out)), references))
    duration = time.monotonic() - started
    for code, err in done:
        assert code == 0, err[-3000:]
    reference = references[0]
    expected = losses(reference)
    assert [s for s, _ in expected] == list(range(1, 7))
    assert losses(references[1]) == expected
    # Even spacing over the reference run's length, plus a few moments during its first
    # second (start-up, before and while the folder is made).
    moments = [0.0, 0.05, 0.2, 0.5] + [duration * i / (KILLS - 4) for i in range(1, KILLS - 3)]
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda n: kill_and_recover(tiny_model_dir, tiny_data, tmp_path / f"killed-{n:02d}",
                                                        moments[n]), range(len(moments))))
    for n, out in enumerate(outs):
        delay = moments[n]
        got = losses(out)
        assert [s for s, _ in got] == [s for s, _ in expected], f"kill {n} at {delay:.2f}s"
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), f"kill {n}"
        same_ledger(reference, out)
