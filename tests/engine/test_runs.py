"""The run history from real run folders (tiny model), and `xgblora runs`."""

import copy
import json

import pytest

from xgblora_engine.cli import main
from xgblora_engine.errors import UserError
from xgblora_engine.runs import cells, curves, differing_settings, find_run, list_runs
from xgblora_engine.session import run_training


@pytest.fixture
def two_runs(tmp_path, tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.train.eval_every, cfg.train.samples = 3, 2
    run_training(copy.deepcopy(cfg), str(tmp_path / "runs" / "a"), lambda e: None)
    cfg.train.lr, cfg.boost.rank = 5e-3, 1
    run_training(cfg, str(tmp_path / "runs" / "b"), lambda e: None)
    return tmp_path / "runs"


def test_summaries_differences_and_the_runs_command(two_runs, capsys):
    """One pair of real runs for everything that reads them (each run costs seconds)."""
    a = find_run("a", two_runs)
    assert a.status == "completed" and a.step == 6 and a.setting("boost", "rank") == 2
    assert a.train_seconds > 0 and a.peak_bytes > 2**20 and 0.0 <= a.sample_f1 <= 1.0
    row = dict(zip(("run", "status"), cells(a)))
    assert row == {"run": "a", "status": "completed"}
    c = curves(a)
    assert c["step"] == [1, 2, 3, 4, 5, 6] and c["eval_step"] == [0, 3, 6] and len(c["memory"]) == 6
    assert c["time"] == sorted(c["time"]) and c["eval_time"][0] == 0.0
    assert [r.name for r in list_runs(two_runs)] == ["b", "a"]  # newest first
    differ = dict(differing_settings([find_run("a", two_runs), find_run("b", two_runs)]))
    assert differ == {"boost.rank": [2, 1], "train.lr": [1e-2, 5e-3]}
    assert main(["runs", "--root", str(two_runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["Run", "Status", "Model", "Data", "Rank"] and len(lines) == 3
    assert main(["runs", "a", str(two_runs / "b"), "--root", str(two_runs)]) == 0
    out = capsys.readouterr().out
    assert "settings that differ:" in out and "train.lr" in out and "boost.rank" in out
    assert main(["runs", "a", "b", "--root", str(two_runs), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["runs"]] == ["a", "b"]
    assert data["settings_that_differ"] == {"boost.rank": [2, 1], "train.lr": [0.01, 0.005]}
    assert data["runs"][0]["final_eval_loss"] is not None and data["runs"][0]["peak_bytes"] > 0
    assert main(["runs", "nope", "--root", str(two_runs)]) == 2
    assert "no run called 'nope'" in capsys.readouterr().err


def test_a_run_that_is_not_there_is_named_with_what_to_do(tmp_path):
    with pytest.raises(UserError, match="no run called 'c'") as exc:
        find_run("c", tmp_path)
    assert "xgblora runs" in exc.value.hint


def test_a_run_s_metrics_are_read_again_only_when_they_change(tmp_path, monkeypatch):
    from xgblora_engine.rundir import RunDir
    from xgblora_engine.runs import summarize

    run = RunDir.create(tmp_path / "r", "tiny")
    run.update_status(status="training", step=0)
    run.record_event({"type": "StepMetrics", "step": 1, "round": 1, "loss": 2.0, "lr": 1e-3, "grad_norm": 1.0,
                      "layers": [0], "seconds": 0.5, "tokens": 8})
    assert summarize(run.path).trained_steps == 1
    reads = []
    real = RunDir.metrics
    monkeypatch.setattr(RunDir, "metrics", lambda self: reads.append(1) or real(self))
    assert summarize(run.path).train_seconds == 0.5 and not reads  # unchanged: not read again
    run.record_event({"type": "StepMetrics", "step": 2, "round": 1, "loss": 1.9, "lr": 1e-3, "grad_norm": 1.0,
                      "layers": [0], "seconds": 0.5, "tokens": 8})
    assert summarize(run.path).trained_steps == 2 and reads == [1]
