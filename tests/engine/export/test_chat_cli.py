"""`xgblora export` / `xgblora chat` on the command line, and the generate() the worker calls."""

import json

import pytest

from xgblora_engine.cli import main
from xgblora_engine.export import chat as CH


@pytest.fixture(autouse=True)
def fresh_cache():
    CH.clear_cache()
    yield
    CH.clear_cache()


def test_generate_answers_and_stops_at_end_of_turn(tiny_run, tiny_chat_dir):
    text, n, seconds, stopped = CH.generate(tiny_run, "What is the capital of France?", 32)
    assert stopped and 0 < n < 32 and seconds >= 0 and isinstance(text, str)
    assert "<|im_end|>" not in text
    base_text, *_ = CH.generate(str(tiny_chat_dir), "What is the capital of France?", 32)
    assert base_text == "Paris."


def test_generate_caches_the_last_two_models(tiny_run, tiny_chat_dir, monkeypatch):
    loads = []
    real = CH._load
    monkeypatch.setattr(CH, "_load", lambda spec: loads.append(str(spec)) or real(spec))
    for _ in range(2):
        CH.generate(tiny_run, "What is 10 divided by 2?", 8)
        CH.generate(tiny_chat_dir, "What is 10 divided by 2?", 8)
    assert loads == [str(tiny_run), str(tiny_chat_dir)]
    CH.generate(tiny_run, "Say hello.", 4)
    assert len(loads) == 2


def test_generate_hits_the_length_limit(tiny_run):
    _, n, _, stopped = CH.generate(tiny_run, "What is the capital of France?", 1)
    assert n == 1 and not stopped


def test_cli_chat_compare_shows_base_and_fine_tuned(tiny_run, capsys):
    code = main(["chat", str(tiny_run), "--prompt", "What is 10 divided by 2?", "--compare", "--max-new-tokens", "16"])
    out = capsys.readouterr().out
    assert code == 0
    assert "--- base (" in out and "--- fine-tuned (" in out and "stopped at end of turn" in out
    assert out.index("--- base") < out.index("--- fine-tuned")


def test_cli_chat_interactive_loop(tiny_run, monkeypatch, capsys):
    answers = iter(["What is 10 divided by 2?", "Say hello.", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["chat", str(tiny_run), "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- fine-tuned") == 2


def test_cli_chat_compare_needs_a_run(tiny_chat_dir, capsys):
    code = main(["chat", str(tiny_chat_dir), "--prompt", "hi", "--compare"])
    err = capsys.readouterr().err
    assert code == 2 and "--compare needs a run folder" in err and "Traceback" not in err


def test_cli_export_prints_results_and_exit_codes(tiny_run, tmp_path, capsys, monkeypatch):
    code = main(["export", str(tiny_run), "--out", str(tmp_path / "o"), "--format", "hf,peft", "--peft-rank", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "hf: OK" in captured.out and "peft: OK" in captured.out and "verified:" in captured.out
    assert "[ok] peft SVD compression" in captured.err
    assert json.loads((tmp_path / "o" / "peft" / "adapter_config.json").read_text())["r"] == 2
    # a failed verification exits 1 and says what failed
    import xgblora_engine.export.hf as H

    monkeypatch.setattr(H, "verify_hf", lambda *a, **k: [H.Check("logits", False, "max |Δlogit| 9")])
    code = main(["export", str(tiny_run), "--out", str(tmp_path / "o2")])
    captured = capsys.readouterr()
    assert code == 1 and "hf: FAILED" in captured.out and "logits: max |Δlogit| 9" in captured.out


def test_cli_export_without_out_makes_a_new_folder_each_time(tiny_run, capsys):
    for n in (1, 2):
        assert main(["export", str(tiny_run), "--no-verify"]) == 0
        assert f"hf: OK {tiny_run / 'exports' / f'hf-{n}'}\n" in capsys.readouterr().out
    assert (tiny_run / "exports" / "hf-1" / "config.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx"], "unknown export format 'onnx'"),
    (["--quant", "q2_k"], "invalid choice: 'q2_k'"),
])
def test_cli_export_bad_options(tiny_run, tmp_path, capsys, args, message):
    code = main(["export", str(tiny_run), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
