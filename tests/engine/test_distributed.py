"""Data-parallel runs with real processes (gloo on CPU): same results as one process."""

import json
import subprocess
import sys
import time

import psutil
import pytest
import torch

from xgblora_engine.boosting.ledger import BoosterLedger

pytestmark = pytest.mark.slow


def train(run, tiny_model_dir, tiny_data, *extra, check=True):
    cmd = [sys.executable, "-m", "xgblora_engine.cli", "train", "--model", str(tiny_model_dir), "--data", str(tiny_data),
           "--max-steps", "6", "--merge-every", "2", "--layers-per-round", "2", "--rank", "2", "--lr", "0.01",
           "--seq-len", "32", "--eval-every", "0", "--out", str(run), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _env():
    import os

    return dict(os.environ, XGBLORA_DEBUG_DIST="1")  # assert the ranks agree on every layer draw


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# The gradient start sums its sketches over ranks (and trains fresh rounds; gradient-first
# only a module's first, the rest carried); the line search its losses, on top of the
# defaults (kaiming start, carried A and moments), which it thereby covers too: a
# data-parallel fault in the plain path shows in its losses and ledger alike.
@pytest.mark.parametrize("extra", [["--booster-init", "gradient"], ["--booster-init", "gradient-first"],
                                   ["--line-search"]], ids=["gradient", "gradient-first", "line-search"])
def test_two_processes_match_one_process_with_the_whole_batch(tmp_path, tiny_model_dir, tiny_data, extra):
    single, double = tmp_path / "single", tmp_path / "double"
    train(single, tiny_model_dir, tiny_data, "--batch-size", "4", *extra)
    train(double, tiny_model_dir, tiny_data, "--batch-size", "2", "--num-processes", "2", "--stop-after", "3", *extra)
    resumed = subprocess.run([sys.executable, "-m", "xgblora_engine.cli", "resume", str(double), "--num-processes", "2"],
                             capture_output=True, text=True, timeout=300, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = metrics(single), metrics(double)
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        assert x.get("loss", x.get("eval_loss")) == pytest.approx(y.get("loss", y.get("eval_loss")), abs=1e-5)
        assert x.get("tokens") == y.get("tokens")
    la, lb = BoosterLedger.load(single / "ledger.safetensors"), BoosterLedger.load(double / "ledger.safetensors")
    assert [r.layers for r in la.rounds] == [r.layers for r in lb.rounds]
    # The gradient start factorises sketches summed in another order; the SVD turns their
    # 1e-7 rounding differences into ~1e-5 ones in A (the losses above still agree to 1e-5).
    atol = 1e-4 if "gradient" in extra else 1e-5
    for x, y in zip(la.entries, lb.entries):
        assert torch.allclose(x.A, y.A, atol=atol) and torch.allclose(x.B, y.B, atol=atol)
        assert x.scaling == pytest.approx(y.scaling, abs=1e-5)  # the line search's multiple, agreed by the ranks
    assert json.loads((double / "run.json").read_text())["processes"] == 2
    assert not list(tmp_path.glob("double/*rank*")), "only rank 0 writes run files"


def test_a_dying_rank_stops_the_run_instead_of_hanging(tmp_path, tiny_model_dir, tiny_data):
    cmd = [sys.executable, "-m", "xgblora_engine.cli", "train", "--model", str(tiny_model_dir), "--data", str(tiny_data),
           "--max-steps", "100000", "--merge-every", "2", "--seq-len", "32", "--batch-size", "2",
           "--num-processes", "2", "--out", str(tmp_path / "run")]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "run" / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        ranks = [p for p in psutil.Process(launcher.pid).children(recursive=True)
                 if "xgblora_engine.cli" in " ".join(p.cmdline()) and "torch.distributed.run" not in " ".join(p.cmdline())]
        assert len(ranks) == 2
        ranks[-1].kill()
        _, err = launcher.communicate(timeout=90)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "failed" in err.lower() or "error" in err.lower()
