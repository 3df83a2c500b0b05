from benchmarks.levers import add_section


def test_a_levers_cost_table_replaces_its_own_and_keeps_the_others(tmp_path):
    path = tmp_path / "levers_cost.md"
    add_section(path, "#### rank 8\n\n| a | 1 |\n")
    add_section(path, "#### κ 40\n\n| b | 2 |\n")
    add_section(path, "#### rank 8\n\n| a | 3 |\n")  # measured again
    assert path.read_text() == "#### rank 8\n\n| a | 3 |\n\n#### κ 40\n\n| b | 2 |\n"


def _row(name, data, seed, loss):
    return {"method": {"name": name}, "setup": {"data": data, "seed": seed},
            "final_eval_loss": loss, "clipped_share": 0.0}


def test_a_lever_passes_only_with_a_clear_gain_on_every_set_it_ran_on(monkeypatch):
    from benchmarks import levers

    sets = ["sample:unicode-names", "sample:python-topics"]
    monkeypatch.setattr(levers, "reference", lambda data, base: [_row(base, data, s, 2.0) for s in (0, 1, 2)])
    clear = [_row("κ 40", d, s, 2.0 - g) for d in sets for s, g in zip((0, 1, 2), (0.10, 0.11, 0.12))]
    noisy = [_row("rank 16", d, s, 2.0 - g) for d in sets for s, g in zip((0, 1, 2), (0.10, -0.05, 0.12))]
    one_set = [_row("rank 32", sets[0], s, 2.0 - g) for s, g in zip((0, 1, 2), (0.10, 0.11, 0.12))]
    verdict = levers.report(clear + noisy + one_set).splitlines()[-1]
    assert verdict.endswith(": κ 40.")


def test_a_lever_changes_only_its_own_setting_of_its_base():
    from benchmarks.harness import Method
    from benchmarks.levers import lever_method

    now, then = Method.engine_defaults("x"), Method.previous_defaults("x")
    assert lever_method("rank 16, defaults now") == Method.engine_defaults("rank 16, defaults now", rank=16)
    assert lever_method("κ 40") == Method.previous_defaults("κ 40", rank=4, kappa=40)
    # the two bases differ where the defaults moved, so a lever's base is not a detail
    assert (now.sampling, now.optimizer_state, now.k_share) == ("top-biased", "carry-b", None)
    assert (then.sampling, then.optimizer_state, then.k_share) == ("uniform", "carry", 1 / 3)


def test_the_equal_time_arm_is_the_defaults_given_more_steps_and_only_it():
    from benchmarks.harness import Method
    from benchmarks.levers import jobs

    sets = ["sample:unicode-names", "sample:python-topics"]
    longer = jobs([0], ["1.25x the steps, defaults now"], sets)
    same = jobs([0], ["rank 16, defaults now"], sets)
    assert [s.steps for _, s in longer] == [188, 125] and [s.steps for _, s in same] == [150, 100]
    assert longer[0][0] == Method.engine_defaults("1.25x the steps, defaults now")
