"""The long-run report: the end of each curve and its lowest point, paired by seed."""

from benchmarks.long_run import best, jobs, report

LORA = {"name": "lora-r8", "kind": "lora", "rank": 8}
XGB = {"name": "xgb-default", "kind": "xgblora", "rank": 8, "kappa": 20, "sampling": "uniform", "lr": 6e-3,
       "lr_rule": "scaled", "optimizer_state": "carry"}


def row(method, seed, losses):
    evals = [{"step": 50 * i, "loss": loss} for i, loss in enumerate(losses)]
    return {"method": method, "k": 10, "setup": {"seed": seed, "steps": 50 * (len(losses) - 1),
                                                  "data": "sample:python-topics"},
            "evals": evals, "final_eval_loss": losses[-1]}


def test_the_report_pairs_by_seed_and_finds_each_curve_s_lowest_point():
    # the XGBLoRA runs finished in the other order, as two runs side by side may
    rows = [row(LORA, 0, [5.0, 2.0, 1.9, 2.3]), row(XGB, 1, [5.0, 2.2, 2.1, 2.2]),
            row(LORA, 1, [5.0, 2.2, 2.0, 2.4]), row(XGB, 0, [5.0, 2.1, 1.8, 2.0])]
    assert best(rows[0]) == (1.9, 100)  # the step-0 loss is not a result
    text = report(rows)
    assert text.startswith("#### sample:python-topics, 150 steps, seeds 0,1")
    xgb = next(line for line in text.splitlines() if line.startswith("| XGBLoRA r=8 k=10 κ=20 carried"))
    assert "| 2.100 ± 0.141 | -0.250 ± 0.071 | 1.950 ± 0.212 | 0.000 ± 0.141 | 100, 100 |" in xgb


def test_the_jobs_are_lora_and_the_defaults_on_every_seed():
    names = [(m.name, m.rank, s.seed, s.steps, s.eval_every, s.seq_len) for m, s in jobs("sample:python-topics", 600, [0, 1])]
    assert names == [("lora-r8", 8, 0, 600, 50, 192), ("xgb-default", 8, 0, 600, 50, 192),
                     ("lora-r8", 8, 1, 600, 50, 192), ("xgb-default", 8, 1, 600, 50, 192)]
    # the defaults as the engine runs them now (earlier defaults' rows keep their own names)
    xgb = jobs("sample:unicode-names", 600, [0])[1][0]
    assert (xgb.name, xgb.k, xgb.sampling, xgb.optimizer_state, xgb.warmup) == ("xgb-default", None, "top-biased", "carry-b", 0)
    # one method only, for two scripts side by side
    assert [m.name for m, _ in jobs("sample:python-topics", 600, [1], "xgblora")] == ["xgb-default"]
