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
    reply = CH.generate(tiny_run, "What is the capital of France?", CH.Sampling(32))
    assert reply.stopped and reply.finish == "end_of_turn" and 0 < reply.tokens < 32 and reply.seconds >= 0
    assert "<|im_end|>" not in reply.text and 0 < reply.first_token_s <= reply.seconds
    assert CH.generate(str(tiny_chat_dir), "What is the capital of France?", CH.Sampling(32)).text == "Paris."


def test_the_answer_streams_in_pieces_that_add_up_to_it(tiny_chat_dir):
    pieces = []
    reply = CH.generate(str(tiny_chat_dir), "What is the capital of France?", CH.Sampling(32), on_text=pieces.append)
    assert len(pieces) >= 2 and "".join(pieces) == reply.text == "Paris."


def test_a_stop_ends_the_answer_after_the_current_token(tiny_chat_dir):
    pieces = []
    reply = CH.generate(str(tiny_chat_dir), "What is the capital of France?", CH.Sampling(32),
                        on_text=pieces.append, should_stop=lambda: bool(pieces))
    # stopped within a token of the first text shown, before the end-of-turn token the full answer has
    assert reply.finish == "stopped" and not reply.stopped and reply.text == "".join(pieces)
    full = CH.generate(str(tiny_chat_dir), "What is the capital of France?", CH.Sampling(32))
    assert reply.tokens < full.tokens


def test_a_conversation_is_rendered_with_its_history(tiny_chat_dir):
    from xgblora_engine.export.common import chat_ids

    _, tokenizer = CH.get_model(str(tiny_chat_dir))
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.decode(chat_ids(tokenizer, turns, system="Be brief."))
    assert text.index("Be brief.") < text.index("Hi") < text.index("Hello!") < text.index("capital")
    assert CH.generate(str(tiny_chat_dir), turns, CH.Sampling(32)).finish == "end_of_turn"


def test_sampling_is_reproducible_by_seed(tiny_run):
    def sample(seed):
        return CH.generate(tiny_run, "Say hello.", CH.Sampling(12, temperature=1.5, top_p=0.95, seed=seed)).text

    assert sample(1) == sample(1)
    assert len({sample(s) for s in range(4)}) > 1  # a temperature this high draws different answers


@pytest.mark.parametrize("sampling, message", [
    (CH.Sampling(0), "invalid answer length 0"), (CH.Sampling(8, temperature=-1), "invalid temperature -1"),
    (CH.Sampling(8, top_p=0), "invalid top-p 0")])
def test_bad_sampling_settings_are_named(sampling, message):
    from xgblora_engine.errors import UserError

    with pytest.raises(UserError, match=message):
        sampling.validate()


def test_generate_caches_the_last_two_models(tiny_run, tiny_chat_dir, monkeypatch):
    loads = []
    real = CH._load
    monkeypatch.setattr(CH, "_load", lambda spec: loads.append(str(spec)) or real(spec))
    for _ in range(2):
        CH.generate(tiny_run, "What is 10 divided by 2?", CH.Sampling(8))
        CH.generate(tiny_chat_dir, "What is 10 divided by 2?", CH.Sampling(8))
    assert loads == [str(tiny_run), str(tiny_chat_dir)]
    CH.generate(tiny_run, "Say hello.", CH.Sampling(4))
    assert len(loads) == 2


def test_generate_hits_the_length_limit(tiny_run):
    reply = CH.generate(tiny_run, "What is the capital of France?", CH.Sampling(1))
    assert reply.tokens == 1 and reply.finish == "length"


def test_cli_chat_compare_shows_base_and_fine_tuned(tiny_run, capsys):
    code = main(["chat", str(tiny_run), "--prompt", "What is 10 divided by 2?", "--compare", "--max-new-tokens", "16"])
    out = capsys.readouterr().out
    assert code == 0
    assert "--- base (" in out and "--- fine-tuned" in out and "end of turn)" in out
    assert out.index("--- base") < out.index("--- fine-tuned")


def test_cli_chat_is_a_conversation_with_commands(tiny_chat_dir, monkeypatch, capsys):
    lines = iter(["What is the capital of France?", "", "/system Be brief.", "And of Italy?", "/reset", "/help",
                  "/exit", "never read"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    seen = []
    real = CH.generate
    monkeypatch.setattr(CH, "generate", lambda spec, turns, *a, **k: seen.append((turns, a[1])) or real(spec, turns, *a, **k))
    assert main(["chat", str(tiny_chat_dir), "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"--- {tiny_chat_dir}") == 2  # the empty line was ignored, /exit quit
    assert "Paris." in out and "first token after" in out and "system prompt: Be brief." in out
    assert "new conversation" in out and "/reset starts a new conversation" in out
    (first, system1), (second, system2) = seen
    assert system1 is None and system2 == "Be brief."
    assert [t["role"] for t in second] == ["user", "assistant", "user"] and second[1]["content"] == "Paris."


def test_cli_chat_rejects_bad_sampling(tiny_chat_dir, capsys):
    assert main(["chat", str(tiny_chat_dir), "--prompt", "hi", "--top-p", "1.5"]) == 2
    assert "invalid top-p 1.5" in capsys.readouterr().err


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
