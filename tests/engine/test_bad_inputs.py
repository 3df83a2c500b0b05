"""The bad-input corpus: every case ends with exit status 2, one clear message and a hint,
no traceback, and every file the user had exactly as it was.

The worker runs in-process here (the same Worker.run_command the worker process runs, its
events drawn by the same `drive`), so the corpus takes seconds, not a process per case;
test_cli.py covers the real process."""

import hashlib
import json
import os
import shutil

import pytest

from xgblora_engine import protocol as P
from xgblora_engine.cli import main

ALPACA = {"instruction": "w1 w2", "output": "w3"}


class InProcessClient:
    """WorkerClient's interface over a Worker in this process."""

    def start(self):
        self.queue = []

    def put(self, data):  # the worker's event queue
        self.queue.append(P.decode_event(data))

    def send(self, command):
        from xgblora_engine.worker import Worker

        Worker(None, self).run_command(command)
        self.queue.append(P.StateChanged(state="idle"))

    def events(self):
        while self.queue:
            yield self.queue.pop(0)

    def close(self):
        pass


@pytest.fixture(autouse=True)
def in_process_worker(monkeypatch):
    monkeypatch.setattr("xgblora_engine.worker.WorkerClient", InProcessClient)


def jsonl(rows):
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


# --- the cases: (id, args builder, expected message) ----------------------------------------
# A builder gets (tmp, model, data) and returns the command line; files it writes are the user's.

def data_case(name, content):
    return lambda t, m, d: ["train", "--model", m, "--data", write(t / name, content), "--out", str(t / "out")]


def train_with(*flags):
    return lambda t, m, d: ["train", "--model", m, "--data", d, "--out", str(t / "out"), *flags]


def config_case(text):
    return lambda t, m, d: ["train", "--config", write(t / "run.yaml", text), "--model", m, "--data", d,
                            "--out", str(t / "out")]


def model_case(setup):
    return lambda t, m, d: ["train", "--model", setup(t, m), "--data", d, "--out", str(t / "out")]


def bare_folder(t, m):
    (t / "empty-model").mkdir()
    return str(t / "empty-model")


def folder_with_bad_config(t, m):
    shutil.copytree(m, t / "bad-model")
    (t / "bad-model" / "config.json").write_text("{not json")
    return str(t / "bad-model")


def folder_without_weights(t, m):
    shutil.copytree(m, t / "no-weights")
    for f in (t / "no-weights").glob("*.safetensors"):
        f.unlink()
    return str(t / "no-weights")


def unknown_architecture(t, m):
    shutil.copytree(m, t / "odd-model")
    (t / "odd-model" / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    return str(t / "odd-model")


def a_run(t, m, d, steps=2):
    """A finished tiny run, trained through the same in-process worker."""
    out = t / "run"
    assert main(["train", "--model", m, "--data", d, "--out", str(out), "--max-steps", str(steps),
                 "--merge-every", "2", "--seq-len", "32", "--batch-size", "2"]) == 0
    return str(out)


def a_run_stopped_before_its_first_merge(t, m, d):
    out = t / "run"
    main(["train", "--model", m, "--data", d, "--out", str(out), "--max-steps", "4", "--merge-every", "2",
          "--stop-after", "1", "--seq-len", "32", "--batch-size", "2"])
    return ["export", str(out), "--out", str(t / "x")]


def export_case(*flags, steps=2):
    """An export of a finished tiny run into the test's own folder, with ``flags``."""
    return lambda t, m, d: ["export", a_run(t, m, d, steps), "--out", str(t / "x"), *flags]


def resume_case(setup):
    return lambda t, m, d: ["resume", setup(t, m, d)]


def run_without_intact_checkpoint(t, m, d):
    run = a_run(t, m, d)
    for state in (t / "run" / "checkpoints").glob("*/state.json"):
        state.write_text("{}")
    return run


def run_with_corrupt_config(t, m, d):
    run = a_run(t, m, d)
    (t / "run" / "config.yaml").write_text("model: [unclosed")
    return run


def run_with_bad_setting(t, m, d):
    run = a_run(t, m, d)
    (t / "run" / "config.yaml").write_text("train:\n  max_steps: many\n")
    return run


def out_below_a_file(t, m, d):
    return ["train", "--model", m, "--data", d, "--out", write(t / "notes.txt", "mine") + "/run"]


def out_not_creatable(t, m, d):
    return ["train", "--model", m, "--data", d, "--out", "/proc/xgblora-run/out"]


def out_not_empty(t, m, d):
    write(t / "busy" / "thesis.tex", "mine")
    return ["train", "--model", m, "--data", d, "--out", str(t / "busy")]


def out_holds_a_run(t, m, d):
    return ["train", "--model", m, "--data", d, "--out", a_run(t, m, d)]


def export_into_a_full_folder(t, m, d):
    run = a_run(t, m, d)
    write(t / "target" / "keep.txt", "mine")
    return ["export", run, "--out", str(t / "target")]


def export_below_a_file(t, m, d):
    run = a_run(t, m, d)
    return ["export", run, "--out", write(t / "plain.txt", "mine") + "/model"]


CASES = [
    # data files
    ("data-missing", lambda t, m, d: ["train", "--model", m, "--data", str(t / "nope.jsonl"), "--out", str(t / "out")],
     "data file not found"),
    ("data-empty", data_case("empty.jsonl", ""), "is empty"),
    ("data-blank-lines", data_case("blank.jsonl", "\n\n  \n"), "has no rows"),
    ("data-bad-json-line", data_case("bad.jsonl", '{"instruction": "a", "output": "b"}\n{oops}\n'), "line 2"),
    ("data-jsonl-not-objects", data_case("list.jsonl", "[1, 2]\n"), "line 1"),
    ("data-json-scalar", data_case("scalar.json", "42"), "scalar.json"),
    ("data-json-list-of-numbers", data_case("nums.json", "[1, 2, 3]"), "nums.json"),
    ("data-json-broken", data_case("broken.json", '[{"a": 1},'), "not valid JSON"),
    ("data-csv-header-only", data_case("head.csv", "instruction,output\n"), "has no rows"),
    ("data-parquet-corrupt", data_case("corrupt.parquet", b"PAR1 not really parquet"), "corrupt.parquet"),
    ("data-not-utf8", data_case("latin.jsonl", '{"instruction": "caf\xe9", "output": "x"}'.encode("latin-1")),
     "not UTF-8"),
    ("data-binary", data_case("blob.jsonl", bytes(range(256)) * 4), "blob.jsonl"),
    ("data-unsupported-type", data_case("book.xlsx", b"PK\x03\x04"), "unsupported data file type '.xlsx'"),
    ("data-folder", lambda t, m, d: ["train", "--model", m, "--data", str(t), "--out", str(t / "out")],
     "is a folder, not a data file"),
    ("data-hub-id-offline", train_with("--data", "someone/no-such-dataset-xyz"), "no-such-dataset-xyz"),
    # rows
    ("row-output-missing", data_case("r1.jsonl", jsonl([ALPACA, {"instruction": "q"}])), "row 2"),
    ("row-output-empty", data_case("r2.jsonl", jsonl([ALPACA, {"instruction": "q", "output": " "}])),
     "row 2: field 'output' is missing or empty"),
    ("row-output-not-text", data_case("r3.jsonl", jsonl([ALPACA, {"instruction": "q", "output": ["a"]}])),
     "should be text, got list"),
    ("row-messages-not-list", data_case("c1.jsonl", jsonl([{"messages": "hello"}])), "messages should be"),
    ("row-unknown-role", data_case("c2.jsonl", jsonl([{"messages": [{"role": "wizard", "content": "a"}]}])),
     "unknown or missing role 'wizard'"),
    ("row-no-assistant", data_case("c3.jsonl", jsonl([{"messages": [{"role": "user", "content": "a"}]}])),
     "no assistant message"),
    ("row-empty-assistant", data_case("c4.jsonl", jsonl([{"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}])), "response is empty"),
    ("row-content-not-text", data_case("c5.jsonl", jsonl([{"messages": [
        {"role": "user", "content": 5}, {"role": "assistant", "content": "b"}]}])), "content should be text"),
    ("row-message-not-object", data_case("c6.jsonl", jsonl([{"messages": ["hi", "there"]}])),
     "expected an object"),
    ("row-image-part", data_case("c7.jsonl", jsonl([{"messages": [
        {"role": "user", "content": [{"type": "image", "image": "x.png"}]},
        {"role": "assistant", "content": "b"}]}])), "holds image content"),
    ("row-responses-too-long", lambda t, m, d: ["train", "--model", m, "--data", write(t / "long.jsonl", jsonl(
        [{"instruction": "q", "output": "w1 " * 80}] * 3)), "--seq-len", "16", "--out", str(t / "out")],
     "the response alone is longer than 16 tokens"),
    # columns
    ("columns-unknown-format", data_case("cols.jsonl", jsonl([{"a": 1, "b": 2}])), "cannot tell the data's format"),
    ("columns-mapped-missing", train_with("--columns", "instruction=question"),
     "column 'question' (mapped to instruction) is not in the data"),
    ("columns-unknown-field", train_with("--columns", "answer=output"), "unknown field 'answer'"),
    ("columns-bad-syntax", train_with("--columns", "instruction"), "columns"),
    ("columns-forced-format", train_with("--format", "chat"), "the chat format needs a column for messages"),
    ("columns-unknown-format-name", train_with("--format", "xml"), "xml"),
    ("columns-preference", data_case("dpo.jsonl", jsonl([{"prompt": "p", "chosen": "a", "rejected": "b"}])),
     "preference pairs"),
    ("columns-image", data_case("img.jsonl", jsonl([{"instruction": "p", "output": "a", "image": "x.png"}])),
     "'image' column(s)"),
    # settings
    ("config-rank-0", train_with("--rank", "0"), "invalid rank 0"),
    ("config-lr-text", train_with("--lr", "fast"), "'--lr' has an invalid value 'fast'"),
    ("config-lr-negative", train_with("--lr", "-1"), "invalid learning rate"),
    ("config-max-steps-0", train_with("--max-steps", "0"), "invalid max steps 0"),
    ("config-batch-0", train_with("--batch-size", "0"), "invalid batch size 0"),
    ("config-seq-len-0", train_with("--seq-len", "0"), "seq"),
    ("config-merge-every-0", train_with("--merge-every", "0"), "invalid merge interval 0"),
    ("config-layers-per-round-0", train_with("--layers-per-round", "0"), "invalid layers per round 0"),
    ("config-k-too-large", train_with("--layers-per-round", "9", "--max-steps", "2"), "k=9 is out of range"),
    ("config-quantize", train_with("--quantize", "2bit"), "invalid quantization '2bit'"),
    ("config-dtype", train_with("--dtype", "fp8"), "fp8"),
    ("config-device", train_with("--device", "tpu"), "tpu"),
    ("config-device-cuda", train_with("--device", "cuda", "--max-steps", "2"), "no CUDA GPU is available"),
    ("config-shard-0", train_with("--shard-gpus", "0"), "invalid number of GPUs to shard over: 0"),
    ("config-eval-fraction", train_with("--eval-fraction", "2"), "eval"),
    ("config-train-on", train_with("--train-on", "prompt"), "prompt"),
    ("config-sampling", train_with("--sampling", "psychic"), "psychic"),
    ("config-dropout", train_with("--dropout", "1.5"), "invalid dropout"),
    ("config-memory-limit", train_with("--memory-limit", "lots"), "lots"),
    ("config-unknown-flag", train_with("--bogus"), "unrecognized arguments: --bogus"),
    ("config-file-missing", lambda t, m, d: ["train", "--config", str(t / "none.yaml")], "none.yaml"),
    ("config-file-bad-yaml", config_case("model: [unclosed"), "run.yaml"),
    ("config-file-not-mapping", config_case("- a\n- b\n"), "expected a mapping"),
    ("config-file-unknown-section", config_case("optimizer:\n  lr: 1\n"), "unknown section 'optimizer'"),
    ("config-file-unknown-key", config_case("train:\n  epochs: 3\n"), "unknown setting 'train.epochs'"),
    ("config-parallel-and-shard", train_with("--shard-gpus", "2", "--num-processes", "2"), "do not mix"),
    # models
    ("model-missing", model_case(lambda t, m: str(t / "missing-model")), "model not found"),
    ("model-empty-folder", model_case(bare_folder), "empty-model"),
    ("model-bad-config", model_case(folder_with_bad_config), "bad-model"),
    ("model-no-weights", model_case(folder_without_weights), "no-weights"),
    ("model-unknown-architecture", model_case(unknown_architecture), "odd-model"),
    ("model-corrupt-gguf", model_case(lambda t, m: write(t / "broken.gguf", b"GGUF" + os.urandom(64))),
     "broken.gguf"),
    ("model-text-file", model_case(lambda t, m: write(t / "weights.txt", "not a model")), "weights.txt"),
    ("model-hub-id-offline", model_case(lambda t, m: "someone/no-such-model-xyz"), "no-such-model-xyz"),
    # output folders
    ("out-below-a-file", out_below_a_file, "is a file, not a folder"),
    ("out-not-creatable", out_not_creatable, "cannot create the run folder /proc/xgblora-run/out"),
    ("out-not-empty", out_not_empty, "exists and is not empty"),
    ("out-holds-a-run", out_holds_a_run, "already holds a run"),
    # resume folders
    ("resume-missing", lambda t, m, d: ["resume", str(t / "gone")], "is not a run folder"),
    ("resume-plain-folder", lambda t, m, d: ["resume", str(t)], "is not a run folder"),
    ("resume-no-intact-checkpoint", resume_case(run_without_intact_checkpoint), "no intact checkpoint"),
    ("resume-corrupt-config", resume_case(run_with_corrupt_config), "config.yaml"),
    ("resume-bad-setting", resume_case(run_with_bad_setting), "'train.max_steps' has an invalid value"),
    # export targets
    ("export-not-a-run", lambda t, m, d: ["export", str(t), "--out", str(t / "x")], "is not a run folder"),
    ("export-format", export_case("--format", "onnx"), "unknown export format 'onnx'"),
    ("export-peft-rank", export_case("--peft-rank", "0"), "invalid adapter rank 0"),
    ("export-nothing-merged", a_run_stopped_before_its_first_merge, "no merged round yet"),
    ("export-into-full-folder", export_into_a_full_folder, "target"),
    ("export-below-a-file", export_below_a_file, "plain.txt"),
]


RUN_LOGS = {"run.json", "events.jsonl"}  # a run's status and event log: the engine's to update


def files_of(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and p.name not in RUN_LOGS}


def test_the_corpus_is_large_and_each_case_distinct():
    assert len(CASES) >= 60
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("build, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, tiny_model_dir, tiny_data, build, message):
    args = build(tmp_path, str(tiny_model_dir), str(tiny_data))
    capsys.readouterr()
    before = files_of(tmp_path)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "hint:" in err and "Traceback" not in err and "internal error" not in err
    after = files_of(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "a file of the user's was changed"
