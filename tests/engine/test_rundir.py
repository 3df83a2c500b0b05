"""Run folders left at any moment: each is resumable, or reused by `train`, never a dead end."""

import json
from pathlib import Path

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


def test_ollama_names_are_what_ollama_create_takes():
    from xgblora_engine.rundir import ollama_name

    assert ollama_name("20261201-101500-SmolLM2 135M_v2") == "20261201-101500-smollm2-135m_v2"
    assert ollama_name("...") == "xgblora-model"


def test_each_export_gets_the_next_free_folder_of_its_label(tmp_path):
    from xgblora_engine.rundir import export_label, next_export_folder

    assert export_label(["hf"], "f16") == "hf"
    assert export_label(["hf", "ollama"], "q8_0") == "hf+ollama-q8_0"
    assert next_export_folder(tmp_path / "none-yet", ["hf"], "f16") == tmp_path / "none-yet" / "hf-1"
    for name in ("hf-1", "hf-3.FAILED-VERIFICATION", ".hf-4.partial-x1y2", "hf-x", "gguf-f16-7"):
        (tmp_path / name).mkdir()
    assert next_export_folder(tmp_path, ["hf"], "f16") == tmp_path / "hf-5"  # failed and half-written count
    assert next_export_folder(tmp_path, ["gguf"], "f16") == tmp_path / "gguf-f16-8"
    assert next_export_folder(tmp_path, ["gguf"], "q8_0") == tmp_path / "gguf-q8_0-1"


def test_past_exports_are_read_from_their_records_oldest_first(tmp_path):
    import os

    import msgspec

    from xgblora_engine import protocol as P
    from xgblora_engine.rundir import EXPORT_RECORD, RunDir, past_exports

    exports = RunDir(tmp_path).exports_path
    for i, (name, ok) in enumerate([("hf-1", True), ("gguf-f16-1.FAILED-VERIFICATION", False)]):
        (exports / name).mkdir(parents=True)
        record = exports / name / EXPORT_RECORD
        record.write_bytes(msgspec.json.encode(P.ExportDone(format=name.split("-")[0], path=str(exports / name),
                                                            ok=ok, checks=[], message="m", command="")))
        os.utime(record, (1000 + i, 1000 + i))
    (exports / "hf-2").mkdir()
    (exports / "hf-2" / EXPORT_RECORD).write_text("{not json")  # damaged: skipped, not fatal
    assert [(e.format, e.ok) for e in past_exports(tmp_path)] == [("hf", True), ("gguf", False)]


def test_a_run_is_found_by_its_name_in_the_runs_folder_and_a_path_that_exists_wins(tmp_path, monkeypatch):
    from xgblora_engine.rundir import named_run

    root = tmp_path / "runs"
    run = RunDir.create(root / "20261204-120100-default", "default")
    save_config(RunConfig(), run.config_path)
    assert named_run("20261204-120100-default", root) == run.path
    assert RunDir.open(named_run("20261204-120100-default", root)).path == run.path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "20261204-120100-default").mkdir()  # a folder of that name here is what was meant
    assert named_run("20261204-120100-default", root) == Path("20261204-120100-default")
    assert named_run("no-such-run", root) == Path("no-such-run")
    with pytest.raises(UserError, match="not a run folder") as info:
        RunDir.open(named_run("no-such-run", root))
    assert "xgblora runs" in info.value.hint
