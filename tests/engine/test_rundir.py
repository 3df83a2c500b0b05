"""Run folders left at any moment: each is resumable, or reused by `train`, never a dead end."""

import json

import pytest

from xgblora_engine.config import RunConfig, save_config
from xgblora_engine.errors import UserError
from xgblora_engine.fileio import append_jsonl, read_jsonl
from xgblora_engine.rundir import RunDir


def test_a_folder_with_settings_resumes_and_is_not_taken_by_train(tmp_path):
    run = RunDir.create(tmp_path / "run", "m")
    save_config(RunConfig(), run.config_path)  # killed right after: no run.json yet
    assert RunDir.open(run.path).path == run.path
    with pytest.raises(UserError, match="already holds a run") as info:
        RunDir.create(run.path, "m")
    assert "xgblora resume" in info.value.hint


def test_a_start_killed_before_its_settings_is_reused_by_train_and_resume_says_so(tmp_path):
    run = RunDir.create(tmp_path / "run", "m")
    run.update_status(status="preparing")
    append_jsonl(run.events_path, {"type": "StateChanged", "state": "loading"})
    with pytest.raises(UserError, match="stopped before its settings were written") as info:
        RunDir.open(run.path)
    assert f"--out {run.path}" in info.value.hint
    again = RunDir.create(run.path, "m")
    assert not any(again.path.iterdir())


def test_a_folder_with_other_files_is_never_cleared(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        RunDir.create(tmp_path / "run", "m")
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_a_torn_run_json_does_not_block_the_status_update(tmp_path):
    run = RunDir.create(tmp_path / "run", "m")
    run.status_path.write_text('{"status": "trai')
    run.update_status(status="training", step=2)
    assert run.status()["step"] == 2


def test_a_torn_line_loses_only_itself(tmp_path):
    path = tmp_path / "events.jsonl"
    append_jsonl(path, {"n": 1})
    with open(path, "a") as fh:
        fh.write('{"n": 2, "trunc')  # killed mid-line
    append_jsonl(path, {"n": 3})
    assert read_jsonl(path) == [{"n": 1}, {"n": 3}]
    path.write_text(json.dumps({"n": 1}) + "\n" + "garbage\n" + json.dumps({"n": 4}) + "\n")
    assert read_jsonl(path) == [{"n": 1}, {"n": 4}]
