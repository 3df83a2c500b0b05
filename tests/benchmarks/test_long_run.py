"""The long-run report: the end of each curve and its lowest point, paired by seed."""

from benchmarks.long_run import best, jobs, report


def row(name, seed, losses):
    evals = [{"step": 50 * i, "loss": loss} for i, loss in enumerate(losses)]
    return {"method": {"name": name}, "setup": {"seed": seed, "steps": 50 * (len(losses) - 1)},
            "evals": evals, "final_eval_loss": losses[-1]}


def test_the_report_pairs_by_seed_and_finds_each_curve_s_lowest_point():
    rows = [row("lora-r8", 0, [5.0, 2.0, 1.9, 2.3]), row("xgb-default", 0, [5.0, 2.1, 1.8, 2.0]),
            row("lora-r8", 1, [5.0, 2.2, 2.0, 2.4]), row("xgb-default", 1, [5.0, 2.2, 2.1, 2.2])]
    assert best(rows[0]) == (1.9, 100)  # the step-0 loss is not a result
    text = report(rows)
    xgb = next(line for line in text.splitlines() if line.startswith("| xgb-default"))
    assert "| 2.100 ± 0.141 | -0.250 ± 0.071 | 1.950 ± 0.212 | 0.000 ± 0.141 | 100, 100 |" in xgb


def test_the_jobs_are_lora_and_the_defaults_on_every_seed():
    names = [(m.name, s.seed, s.steps, s.eval_every) for m, s in jobs(600, [0, 1])]
    assert names == [("lora-r8", 0, 600, 50), ("xgb-default", 0, 600, 50),
                     ("lora-r8", 1, 600, 50), ("xgb-default", 1, 600, 50)]
