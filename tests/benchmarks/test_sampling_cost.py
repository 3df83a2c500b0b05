from dataclasses import replace

from benchmarks.harness import Method, Setup
from benchmarks.sampling_cost import arms, interleaved, preset_arms, report


def row(method: Method, step: float, peak_mb: float) -> dict:
    return {"method": {"name": method.name, "kind": method.kind, "rank": method.rank, "sampling": method.sampling,
                       "kappa": method.kappa, "lr": method.lr, "lr_rule": method.lr_rule,
                       "optimizer_state": method.optimizer_state},
            "k": method.k, "step_wall_s": step, "peak_bytes": peak_mb * 2**20}


def test_repeats_take_turns_each_on_its_own_seed():
    methods = arms()[:2]
    jobs = interleaved(Setup(), methods, repeats=2)
    assert [(m.name, s.seed) for m, s in jobs] == [("lora-r8", 0), ("xgb-uniform-k10", 0), ("lora-r8", 1),
                                                 ("xgb-uniform-k10", 1)]


def test_the_ratio_is_of_medians_over_repeats_and_each_repeat_is_paired_with_its_own_lora_run():
    lora, top = arms()[0], arms()[2]
    # a slow spell in the second repeat slows both; the medians are 1.0 s and 0.8 s
    timed = [row(lora, 1.0, 100), row(top, 0.8, 70), row(lora, 2.0, 100), row(top, 1.6, 70),
             row(lora, 0.9, 100), row(top, 0.7, 70)]
    live = [row(lora, 0, 50), row(top, 0, 40)]
    lines = report(timed, live).splitlines()
    top_line = next(line for line in lines if "top-biased" in line).split(" | ")
    assert top_line[1:] == ["3", "0.800", "0.80, 0.80, 0.78", "0.800", "0.700", "40.000", "0.800 |"]


def test_the_arms_are_spelled_out_so_they_stay_what_they_are_when_the_defaults_move():
    _, uniform, top, carried, quality = arms()
    assert (uniform.sampling, uniform.k, uniform.optimizer_state, uniform.warmup) == ("uniform", 10, "carry", 2)
    assert (top.sampling, top.k, top.optimizer_state, top.warmup) == ("top-biased", 15, "carry", 2)
    assert (carried.sampling, carried.k, carried.optimizer_state, carried.warmup) == ("top-biased", 15, "carry-b", 0)
    assert (quality.sampling, quality.k, quality.optimizer_state, quality.warmup) == ("uniform", 20, "carry-b", 0)


def test_the_presets_candidates_change_only_the_share_of_layers_of_the_defaults():
    lora, defaults, before, every, top_two_thirds, fast, fast_carried = preset_arms()
    assert lora.kind == "lora" and before == arms()[4]
    assert (fast.k, fast.sampling, fast.optimizer_state, fast.warmup) == (5, "top-biased", "carry", 2)
    assert (every.k, every.k_share, top_two_thirds.k, fast_carried.k) == (None, 1.0, 20, 5)
    for arm in (every, top_two_thirds, fast_carried):
        assert replace(arm, name=defaults.name, k=defaults.k, k_share=defaults.k_share) == defaults
