import json

from benchmarks.suite import add_row, describe


def _row(name: str, seed: int, loss: float) -> dict:
    return {"method": {"name": name}, "setup": {"seed": seed}, "final_eval_loss": loss}


def test_rows_added_by_two_scripts_to_one_file_all_stay(tmp_path):
    path = tmp_path / "levers.json"
    add_row(path, _row("a", 0, 1.0))  # one script's result
    add_row(path, _row("b", 0, 2.0))  # the other's, written after it
    add_row(path, _row("a", 0, 1.5))  # the same job again replaces its row
    rows = json.loads(path.read_text())["rows"]
    assert sorted((r["method"]["name"], r["final_eval_loss"]) for r in rows) == [("a", 1.5), ("b", 2.0)]


def test_a_method_s_label_says_what_it_carries_and_a_warmup_other_than_two():
    xgb = {"kind": "xgblora", "rank": 8, "kappa": 20, "sampling": "top-biased", "lr": 6e-3, "lr_rule": "scaled"}
    assert describe({**xgb, "optimizer_state": "carry", "warmup": 2}, 15) == \
        "XGBLoRA r=8 k=15 κ=20 top-biased carried, lr 0.006 scaled"
    assert describe({**xgb, "optimizer_state": "carry-b", "warmup": 0}, 15) == \
        "XGBLoRA r=8 k=15 κ=20 top-biased carried with B warmup 0, lr 0.006 scaled"


def test_a_method_with_fixed_layers_is_labelled_and_trains_exactly_those():
    from dataclasses import asdict

    from benchmarks.harness import Method, Setup, run_config

    fixed = Method.engine_defaults("top", layers=[2, 3], optimizer_state="carry-b", warmup=0)
    assert describe(asdict(fixed), 2).startswith("XGBLoRA r=8 k=2 κ=20 layers 2–3 only carried with B")
    cfg = run_config(fixed, Setup())
    assert cfg.boost.layers == [2, 3] and cfg.boost.sampling == "explicit"
