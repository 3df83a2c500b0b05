"""Every bad input exits with status 2 and one clear message, never a traceback."""

import re
import subprocess
import sys

import pytest

from xgblora_engine.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/file.jsonl"], "data file not found: /no/such/file.jsonl"),
    (["--rank", "0"], "invalid rank 0"),
    (["--model", "./missing-model"], "model not found: ./missing-model"),
    (["--quantize", "2bit"], "invalid quantization '2bit'"),
    (["--lr", "fast"], "'--lr' has an invalid value 'fast'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--shard-gpus", "0"], "invalid number of GPUs to shard over: 0"),
    (["--shard-gpus", "2", "--num-processes", "2"], "data-parallel processes (2) and a model sharded over 2 GPUs"),
])
def test_bad_inputs_before_loading(capsys, tmp_path, args, message):
    code, err = run_cli(capsys, "train", "--out", str(tmp_path / "run"), *args)
    assert code == 2 and message in err and "hint:" in err and "Traceback" not in err


def test_bad_json_line_unknown_column_and_k_too_large(capsys, tmp_path, tiny_model_dir, tiny_data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    common = ["train", "--model", str(tiny_model_dir), "--max-steps", "2"]
    code, err = run_cli(capsys, *common, "--data", str(bad), "--out", str(tmp_path / "r1"))
    assert code == 2 and re.search(r"bad.jsonl, line 2\b.*not valid JSON", err)
    code, err = run_cli(capsys, *common, "--data", str(tiny_data), "--columns", "instruction=question",
                        "--out", str(tmp_path / "r2"))
    assert code == 2 and "column 'question' (mapped to instruction) is not in the data" in err
    code, err = run_cli(capsys, *common, "--data", str(tiny_data), "--layers-per-round", "9", "--out", str(tmp_path / "r3"))
    assert code == 2 and "k=9 is out of range: the model has 4 layers" in err


def test_tiny_run_and_flags_win_over_config(capsys, tmp_path, tiny_model_dir, tiny_data):
    config = tmp_path / "run.yaml"
    config.write_text("boost:\n  rank: 3\n  merge_every: 2\ntrain:\n  max_steps: 6\n  lr: 0.01\n")
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--model", str(tiny_model_dir), "--data", str(tiny_data),
                 "--rank", "2", "--batch-size", "2", "--out", str(out)])
    assert code == 0
    import yaml

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["boost"]["rank"] == 2 and resolved["boost"]["merge_every"] == 2
    assert resolved["train"]["max_steps"] == 6 and resolved["boost"]["layers_per_round"] == 2  # half of 4
    code, err = run_cli(capsys, "train", "--model", str(tiny_model_dir), "--data", str(tiny_data), "--out", str(out))
    assert code == 2 and "already holds a run" in err


def test_no_traceback_from_the_real_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "xgblora_engine.cli", "train", "--data", str(tmp_path / "x.csv")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data file not found: {tmp_path / 'x.csv'}"]
    assert "Traceback" not in result.stderr


def test_sharding_on_a_machine_without_gpus_is_refused_by_the_engine(capsys, tiny_model_dir, tiny_data):
    code, err = run_cli(capsys, "estimate", "--no-trial", "--model", str(tiny_model_dir), "--data", str(tiny_data),
                        "--shard-gpus", "2")
    assert code == 2 and "sharding the model over 2 GPUs was asked for but no CUDA GPU is available" in err
    assert "hint: use --shard-gpus 1" in err


def test_resume_refuses_data_parallel_for_a_sharded_run(capsys, tmp_path):
    from xgblora_engine.config import RunConfig, save_config
    from xgblora_engine.rundir import RunDir

    run = RunDir.create(tmp_path / "run", "m")
    cfg = RunConfig()
    cfg.model.shard_gpus = 2
    save_config(cfg, run.config_path)
    run.update_status(status="stopped", step=4)
    code, err = run_cli(capsys, "resume", str(run.path), "--num-processes", "2")
    assert code == 2 and "do not mix" in err and "hint:" in err


@pytest.mark.parametrize("command", ["train", "estimate", "resume", "export", "chat"])
def test_help_shows_values_not_internals(command):
    from xgblora_engine.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    text = sub.format_help()
    assert "option_strings" not in text  # a literal % read as a format once printed argparse's dict
    assert not re.search(r"\b[A-Z]+\.[A-Z_]+\b", text), "a dotted setting key as a metavar"
    assert not re.search(r"(?<!\$)\b[A-Z]+_[A-Z_]+\b", text), "a dest name as a metavar ($NAME: the environment's)"
    if command == "train":
        assert "--rank N" in text and "--sampling {uniform,cyclic,stratified,top-biased,gradient}" in text
        assert "~30% slower" in text and "--carry, --no-carry" in text and "--line-search, --no-line-search" in text


def test_version(capsys):
    from xgblora_engine import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"xgblora {__version__}"
