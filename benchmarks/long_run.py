"""XGBLoRA at its defaults against LoRA r=8 over a long run: do more rounds close the gap
that the comparison's 150 (100) steps leave, or widen it?

600 steps are 6–7 passes over unicode-names' 360 training examples and 8 over
python-topics' 291, so the run also shows which method overfits first. Evaluation every
50 steps; seeds 0, 1 and 2; each run in its own process (the harness of ``compare``).

    python -m benchmarks.long_run [--data sample:python-topics] [--steps 600] [--seeds 0,1,2] [--only lora|xgblora]

Writes results/long_run.{json,md} and results/long_run_<data>.png; the report covers every
run saved in long_run.json (both sets on seeds 0–2).
"""

from __future__ import annotations

import argparse
import json

from benchmarks.compare import chosen_lr, paired
from benchmarks.harness import RESULTS, Method, Setup, data_name
from benchmarks.suite import describe, mean_spread, plot_mean_curves, run_all

SEQ_LEN = {"sample:unicode-names": 128, "sample:python-topics": 192}  # as in compare
# the defaults now ("xgb-default"), and earlier ones: unicode-names ran first before rank 8
# boosters were the default (r = 4), python-topics before the top-biased half ("xgb-third")
ARMS = ("lora-r8", "xgb-default", "xgb-third", "xgb-r4")


def jobs(data: str, steps: int, seeds: list[int], only: str | None = None) -> list[tuple[Method, Setup]]:
    """LoRA r=8 and the defaults on every seed, or ``only`` one of the two kinds."""
    lora = Method("lora-r8", "lora", chosen_lr()["lora"], rank=8)
    xgb = Method.engine_defaults("xgb-default")
    return [(m, Setup(data=data, seq_len=SEQ_LEN[data], steps=steps, seed=seed, eval_every=50, answer_items=0))
            for seed in seeds for m in (lora, xgb) if only in (None, m.kind)]


def best(row: dict) -> tuple[float, int]:
    """The lowest held-out loss along the curve, and its step."""
    e = min(row["evals"][1:], key=lambda e: e["loss"])
    return e["loss"], e["step"]


def report(rows: list[dict]) -> str:
    groups = {name: [r for r in rows if r["method"]["name"] == name] for name in ARMS}
    lora = groups["lora-r8"]
    setup = rows[0]["setup"]
    lines = [f"#### {setup['data']}, {setup['steps']} steps, seeds "
             f"{','.join(str(r['setup']['seed']) for r in lora)} (mean ± standard deviation)", "",
             "| method | held-out loss at the end | − LoRA r=8, same seed | lowest along the curve | − LoRA r=8 | at step |",
             "|:--|--:|--:|--:|--:|--:|"]
    for group in groups.values():
        if not group:
            continue
        lows = [best(r) for r in group]
        lora_low = {r["setup"]["seed"]: best(r)[0] for r in lora}
        low_diff = [low - lora_low[r["setup"]["seed"]] for (low, _), r in zip(lows, group)]
        lines.append(f"| {describe(group[0]['method'], group[0].get('k'))} | {mean_spread([r['final_eval_loss'] for r in group])} "
                     f"| {mean_spread(paired(group, lora, 'final_eval_loss'))} | {mean_spread([b[0] for b in lows])} "
                     f"| {mean_spread(low_diff)} | {', '.join(str(b[1]) for b in lows)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", choices=list(SEQ_LEN),
                        help="a data set (repeatable; default: both)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", choices=("lora", "xgblora"), help="one of the two methods (to run both side by side)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for data in args.data or list(SEQ_LEN):
        run_all("long_run", jobs(data, args.steps, seeds, args.only))
    # the report covers every run saved so far, of either set and any seeds
    rows = json.loads((RESULTS / "long_run.json").read_text())["rows"]
    sections = []
    for data in SEQ_LEN:
        mine = [r for r in rows if r["setup"]["data"] == data and r["setup"]["steps"] == args.steps]
        if not mine:
            continue
        sections.append(report(mine))
        groups = [g for g in ([r for r in mine if r["method"]["name"] == n] for n in ARMS) if g]
        plot_mean_curves(groups, RESULTS / f"long_run_{data_name(data)}.png", f"{data}, {args.steps} steps")
    (RESULTS / "long_run.md").write_text("\n".join(sections), encoding="utf-8")
    print("\n".join(sections))


if __name__ == "__main__":
    main()
