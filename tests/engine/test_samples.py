"""Sample answers during training, on the tiny model and data: real tokenizer, real generate."""

import copy

from xgblora_engine import protocol as P
from xgblora_engine.rundir import RunDir
from xgblora_engine.session import Options, resume_training, run_training


def test_every_evaluation_answers_the_same_held_out_prompts(tmp_path, tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.train.eval_every, cfg.train.samples, cfg.train.sample_tokens = 2, 3, 5
    events = []
    run = run_training(cfg, str(tmp_path / "run"), events.append)
    samples = [e for e in events if isinstance(e, P.SampleAnswers)]
    assert [s.step for s in samples] == [0, 2, 4, 6]  # the base model's, every evaluation, the end
    evals = [e.step for e in events if isinstance(e, P.EvalResult)]
    assert evals == [0, 2, 4, 6]
    prompts = [a.prompt for a in samples[0].answers]
    assert len(prompts) == 3 and all(s.answers and [a.prompt for a in s.answers] == prompts for s in samples)
    first = samples[0].answers[0]
    # the prompt is the held-out instruction as rendered (fallback template), the reference its output
    assert first.prompt and first.reference.startswith("w") and len(first.reference.split()) == 2
    assert all(len(a.answer.split()) <= 5 for s in samples for a in s.answers)  # sample_tokens caps the answer
    assert all(0.0 <= s.token_f1 <= 1.0 and s.seconds > 0 for s in samples)
    saved = RunDir(run.path).samples()
    assert [s["step"] for s in saved] == [0, 2, 4, 6] and saved[-1]["answers"][0]["prompt"] == first.prompt


def test_no_samples_when_switched_off(tmp_path, tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.train.samples = 0
    events = []
    run = run_training(cfg, str(tmp_path / "run"), events.append)
    assert not any(isinstance(e, P.SampleAnswers) for e in events) and not RunDir(run.path).samples()


def test_a_resume_keeps_the_samples_up_to_its_checkpoint_and_answers_the_rest(tmp_path, tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.train.eval_every, cfg.train.samples = 1, 2
    run = run_training(copy.deepcopy(cfg), str(tmp_path / "run"), lambda e: None, options=Options(stop_after=3))
    assert [s["step"] for s in RunDir(run.path).samples()] == [0, 1, 2, 3]
    resume_training(str(run.path), lambda e: None)  # from step 3 (mid-round: live checkpoint)
    straight = run_training(copy.deepcopy(cfg), str(tmp_path / "straight"), lambda e: None)
    assert RunDir(run.path).samples() == [{**s, "seconds": r["seconds"]} for s, r in
                                          zip(RunDir(straight.path).samples(), RunDir(run.path).samples())]


def test_the_prompt_shown_is_the_last_user_message():
    from xgblora_engine.config import ModelConfig
    from xgblora_engine.models.loading import load_tokenizer
    from xgblora_engine.samples import last_user_message, user_turn_markers

    tok = load_tokenizer(ModelConfig())  # the embedded SmolLM2's ChatML template
    markers = user_turn_markers(tok)
    assert markers == ("<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "What is the Unicode name of 'é'?"}]
    ids = tok.apply_chat_template(turns, add_generation_prompt=True)
    assert last_user_message(tok, ids, markers) == "What is the Unicode name of 'é'?"
    one = tok.apply_chat_template(turns[2:], add_generation_prompt=True)  # after the template's own system turn
    assert last_user_message(tok, one, markers) == "What is the Unicode name of 'é'?"
    assert last_user_message(tok, ids, None).endswith("What is the Unicode name of 'é'?\nassistant")  # all of it


def test_running_out_of_memory_while_answering_stops_the_samples_not_the_run(tmp_path, tiny_config, monkeypatch):
    import xgblora_engine.samples as samples

    calls = []

    def out_of_memory(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")  # as torch words it

    monkeypatch.setattr(samples, "answer", out_of_memory)
    cfg = copy.deepcopy(tiny_config)
    cfg.train.eval_every, cfg.train.samples = 2, 2
    events = []
    run_training(cfg, str(tmp_path / "run"), events.append)
    warning = next(e for e in events if isinstance(e, P.Warning))
    assert "sample answers stopped at step 0: out of memory" in warning.message and "--samples" in warning.hint
    assert events[-1].status == "completed" and len(calls) == 1  # tried once, then left alone
