from benchmarks.harness import Method, Setup
from benchmarks.merge_precision import measure, train_ledger


def test_ledger_rebuild_keeps_more_of_the_update_than_merging_in_place_in_bf16(tiny_model_dir, tiny_data):
    setup = Setup(model=str(tiny_model_dir), data=str(tiny_data), steps=12, batch=2, seq_len=32,
                  eval_every=0, eval_examples=8, answer_items=0)
    prepared, originals, ledger, evals = train_ledger(setup, Method("x", lr=1e-3, k=4, kappa=1))
    rows = {r["merge"]: r for r in measure(prepared, originals, ledger, evals)}
    assert len(ledger.rounds) == 12
    assert rows["exact"]["update_error"] == 0.0 and abs(rows["exact"]["update_reached"] - 1) < 1e-6
    assert rows["inplace-fp32"]["update_error"] < 1e-4
    assert rows["ledger-bf16"]["update_error"] < rows["inplace-bf16"]["update_error"]
