"""The benchmark harness on a real tiny model: every method trains, and what it reports is sound."""

from dataclasses import replace

import pytest

from benchmarks.harness import Method, Setup, run, run_isolated
from benchmarks.suite import job_key, loss_at_seconds, mean_spread, table
from tests.conftest import build_tiny_llama


@pytest.fixture
def tiny_setup(tiny_model_dir, tiny_data):
    return Setup(model=str(tiny_model_dir), data=str(tiny_data), steps=4, batch=2, seq_len=32,
                 eval_every=2, eval_examples=8, answer_items=3)



@pytest.mark.parametrize("method", [Method("xgb", lr=3e-2, k=2, kappa=2),
                                    Method("lora", "lora", lr=3e-2, rank=2),
                                    Method("full", "full", lr=1e-3)], ids=lambda m: m.name)
def test_every_method_trains_and_reports(tiny_setup, method):
    r = run(method, tiny_setup)
    assert r["final_eval_loss"] < r["initial_eval_loss"]
    assert [e["step"] for e in r["evals"]] == [0, 2, 4]
    times = [e["train_seconds"] for e in r["evals"]]
    assert times == sorted(times) and times[0] < 0.05 and times[0] < times[-1]
    assert len(r["train_loss"]) == 4 and r["step_wall_s"] > 0 and r["step_cpu_s"] > 0
    assert 0 <= r["clipped_share"] <= 1
    assert r["peak_bytes"] >= r["loaded_bytes"] > 0
    assert 0.0 <= r["exact_match"] <= 1.0 and r["n_items"] == 3
    # tiny llama: hidden 32, intermediate 64, 4 heads of 8, 2 kv heads (k/v out 16)
    per_layer_dims = 2 * (32 + 32) + 2 * (32 + 16) + 3 * (32 + 64)
    every_weight = sum(p.numel() for p in build_tiny_llama().parameters())
    expected = {"xgb": 2 * 1 * per_layer_dims, "lora": 4 * 2 * per_layer_dims, "full": every_weight}
    assert r["trainable_params"] == expected[method.name]
    if method.kind == "xgblora":
        assert r["k"] == 2 and 0 < r["merge_fraction"] < 1
        assert [x["round"] for x in r["rounds"]] == [1, 2]
        assert all(x["booster_norm"] > 0 and x["grad_norm"] > 0 and 0 <= x["clipped_share"] <= 1 for x in r["rounds"])
    else:
        assert r["merge_fraction"] is None


def test_the_previous_defaults_keep_a_third_of_the_layers_drawn_uniformly_with_b_restarted(tiny_setup):
    setup = replace(tiny_setup, steps=2, answer_items=0)
    before = Method.previous_defaults("before", kappa=2)
    assert (before.sampling, before.optimizer_state, before.warmup) == ("uniform", "carry", 2)
    assert run(before, setup)["k"] == 1  # a third of the tiny model's 4 layers
    assert run(Method.engine_defaults("now", kappa=2), setup)["k"] == 2  # the engine's own: half
    assert run(Method.previous_defaults("explicit", k=3, kappa=2), setup)["k"] == 3


def test_carried_adam_moments_change_only_the_rounds_after_the_first(tiny_setup):
    every_layer = Method("fresh", lr=3e-2, k=4, kappa=2)  # each round boosts the same modules again
    fresh = run(every_layer, tiny_setup)
    carry = run(Method("carry", lr=3e-2, k=4, kappa=2, optimizer_state="carry"), tiny_setup)
    assert carry["train_loss"][:3] == fresh["train_loss"][:3]  # round 1, and the first step after its merge
    assert carry["train_loss"][3] != fresh["train_loss"][3]


def test_a_warm_round_is_a_first_round_on_every_layer_then_the_draws(tiny_setup):
    """The diagnostic's first round trains exactly what k = L trains, at k = L's rate."""
    setup = replace(tiny_setup, answer_items=0)
    warm = run(Method.engine_defaults("warm", kappa=2, warm_rounds=1), setup)
    every = run(Method.engine_defaults("every", kappa=2, k=4), setup)
    half = run(Method.engine_defaults("half", kappa=2), setup)
    assert warm["train_loss"][:2] == every["train_loss"][:2] != half["train_loss"][:2]
    assert warm["train_loss"][2:] != every["train_loss"][2:]  # round 2 draws half the layers


def test_loss_at_seconds_interpolates_between_evaluations():
    row = {"evals": [{"train_seconds": 0.0, "loss": 4.0}, {"train_seconds": 10.0, "loss": 2.0},
                     {"train_seconds": 20.0, "loss": 1.0}]}
    assert loss_at_seconds(row, 5.0) == pytest.approx(3.0)
    assert loss_at_seconds(row, 15.0) == pytest.approx(1.5)
    assert loss_at_seconds(row, 99.0) == 1.0


def test_table_formats_missing_values():
    text = table([{"a": 1.23456, "b": None}], [("a", "--:", lambda r: r["a"]), ("b", "--:", lambda r: r["b"])])
    assert text.splitlines() == ["| a | b |", "|--:|--:|", "| 1.235 | – |"]


def test_mean_spread_reports_the_sample_standard_deviation_over_seeds():
    assert mean_spread([1.0, 2.0, 3.0]) == "2.000 ± 1.000"
    assert mean_spread([2.0]) == "2.000"
    assert mean_spread([1.0, 3.0], scale=0.5) == "1.000 ± 0.707"


def test_a_data_set_is_named_by_its_sample_or_file_and_found_from_any_folder(monkeypatch, tmp_path):
    from benchmarks.harness import ROOT, data_name, data_path

    assert data_name("sample:unicode-names") == "unicode-names"
    assert data_name("benchmarks/data/word-definitions.jsonl") == "word-definitions"
    monkeypatch.chdir(tmp_path)  # the key stays relative; the engine gets a path that exists
    assert data_path("benchmarks/data/word-definitions.jsonl") == str(ROOT / "benchmarks/data/word-definitions.jsonl")
    assert data_path("sample:python-topics") == "sample:python-topics"
    assert data_path("/elsewhere/mine.jsonl") == "/elsewhere/mine.jsonl"


def test_a_live_memory_run_has_freed_blocks_handed_back_and_is_a_job_of_its_own(tiny_setup):
    method, live = Method("xgb", lr=3e-2, k=2, kappa=2), replace(tiny_setup, steps=2, answer_items=0)
    plain = replace(live, live_memory=False)
    live = replace(live, live_memory=True)
    row = run_isolated(method, live)  # a fresh process, as the benchmarks run it
    assert row["mmap_threshold"] == "65536" and row["setup"]["live_memory"] is True
    assert row["peak_bytes"] >= row["loaded_bytes"] > 0
    assert run_isolated(method, plain)["mmap_threshold"] is None
    assert job_key(method, live) != job_key(method, plain)
