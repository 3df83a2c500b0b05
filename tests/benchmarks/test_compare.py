import pytest

from benchmarks.compare import by_method, rise_and_spread


def run(name, losses):
    return {"method": {"name": name}, "evals": [{"loss": v} for v in losses]}


def test_the_largest_rise_of_the_mean_curve_is_set_against_the_seed_spread_where_it_rose():
    rise, spread = rise_and_spread([run("x", [3.0, 2.0, 2.2, 1.0]), run("x", [3.0, 2.2, 2.1, 1.0])])
    assert rise == pytest.approx(0.05)  # mean 3, 2.1, 2.15, 1
    assert spread == pytest.approx(0.0707, abs=1e-4)  # std of 2.2 and 2.1
    assert rise_and_spread([run("x", [3.0, 2.0, 1.0])]) == (0.0, 0.0)


def test_rows_are_grouped_by_method_in_first_seen_order():
    rows = [run("a", [1]), run("b", [1]), run("a", [2])]
    assert [[r["evals"][0]["loss"] for r in g] for g in by_method(rows).values()] == [[1, 2], [1]]


def test_differences_are_taken_within_a_seed():
    from benchmarks.compare import paired

    def row(seed, loss):
        return {"setup": {"seed": seed}, "final_eval_loss": loss}

    base = [row(0, 1.5), row(1, 1.8)]
    assert paired([row(1, 2.0), row(0, 1.6), row(2, 9.0)], base, "final_eval_loss") == pytest.approx([0.2, 0.1])


def test_a_table_shows_the_saved_runs_of_the_present_arms_only(monkeypatch, tmp_path):
    from dataclasses import asdict

    from benchmarks import compare, suite
    from benchmarks.harness import Method, Setup

    monkeypatch.setattr(suite, "RESULTS", tmp_path)
    now, before = Method("lora-r8", "lora", rank=8), Method("xgb-old", lr=1e-2)
    jobs = [(now, Setup(seed=0)), (now, Setup(seed=1)), (Method.engine_defaults("xgb-default"), Setup(seed=0))]
    rows = [{"method": asdict(m), "setup": asdict(s), "final_eval_loss": 2.0}
            for m, s in [jobs[1], (before, Setup(seed=0)), jobs[0]]]  # an arm since dropped; one not yet run
    suite.save(tmp_path / "compare_x.json", rows)
    assert [(r["method"]["name"], r["setup"]["seed"]) for r in compare.saved("compare_x", jobs)] == \
        [("lora-r8", 0), ("lora-r8", 1)]


def test_a_run_without_greedy_answers_stands_in_for_its_job_and_its_score_shows_as_missing(monkeypatch, tmp_path):
    from dataclasses import asdict, replace

    from benchmarks import compare, suite
    from benchmarks.harness import Method, Setup

    monkeypatch.setattr(suite, "RESULTS", tmp_path)
    lora, xgb, setup = Method("lora-r8", "lora", rank=8), Method.engine_defaults("xgb-default"), Setup(answer_items=16)
    rows = [{"method": asdict(lora), "setup": asdict(setup), "final_eval_loss": 2.0, "exact_match": 0.5},
            {"method": asdict(xgb), "setup": asdict(replace(setup, answer_items=0)), "final_eval_loss": 2.1},
            {"method": asdict(xgb), "setup": asdict(replace(setup, seed=1, steps=7)), "final_eval_loss": 9.0}]
    suite.save(tmp_path / "compare_x.json", rows)
    found = compare.saved("compare_x", [(lora, setup), (xgb, setup)])
    assert [r["final_eval_loss"] for r in found] == [2.0, 2.1]  # not the run of other steps
    for row in found:
        row.update(evals=[{"step": 0, "loss": 3.0, "train_cpu": 0.0}, {"step": 10, "loss": row["final_eval_loss"],
                                                                       "train_cpu": 10.0}],
                   train_cpu_s=10.0, step_wall_s=1.0, step_cpu_s=1.0, peak_bytes=1, merge_fraction=None)
    xgb_line = compare.report(found, "sample:unicode-names").splitlines()[-1]
    assert xgb_line.split(" | ")[5] == "–"  # exact match: not scored in that run
    assert compare.scored([{"exact_match": 0.5}, {}], "exact_match") == "0.500 (1 of 2 seeds)"


def test_a_sweep_on_another_set_checks_the_rates_without_choosing_them(monkeypatch, tmp_path):
    from benchmarks import compare
    from benchmarks.harness import Setup

    monkeypatch.setattr(compare, "RESULTS", tmp_path)
    losses = {5e-4: 3.2, 1e-3: 3.0, 2e-3: 2.9, 5e-3: 3.1}
    monkeypatch.setattr(compare, "run_all", lambda name, jobs: [
        {"method": {"name": m.name, "lr": m.lr}, "final_eval_loss": losses[m.lr]} for m, _ in jobs])
    assert compare.sweep(Setup(data="benchmarks/data/word-definitions.jsonl"), ["lora"], choose=False) == {"lora": 2e-3}
    assert not (tmp_path / "lr_sweep_best.json").exists()  # the comparison's rates stay the first set's
    compare.sweep(Setup(), ["lora"])
    assert (tmp_path / "lr_sweep_best.json").exists()


def test_a_table_shows_every_seed_run_so_far_not_only_the_ones_just_asked_for():
    from benchmarks.compare import table_seeds

    rows = [{"setup": {"seed": s}} for s in (0, 1, 2, 0)]
    assert table_seeds([3, 4], rows) == [0, 1, 2, 3, 4]
    assert table_seeds([0], []) == [0]
