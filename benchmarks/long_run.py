"""XGBLoRA at its defaults against LoRA r=8 over a long run: do more rounds close the gap
that 150 steps leave, or widen it?

600 steps on unicode-names are 6–7 passes over its 360 training examples, so the run also
shows which method overfits first. Evaluation every 50 steps; seeds 0, 1 and 2; each run
in its own process (the harness of ``compare``).

    python -m benchmarks.long_run [--steps 600] [--seeds 0,1,2]

Writes results/long_run.{json,md} and results/long_run_unicode-names.png.
"""

from __future__ import annotations

import argparse

from benchmarks.compare import chosen_lr, paired
from benchmarks.harness import RESULTS, Method, Setup
from benchmarks.suite import mean_spread, plot_mean_curves, run_all


def jobs(steps: int, seeds: list[int]) -> list[tuple[Method, Setup]]:
    lora = Method("lora-r8", "lora", chosen_lr()["lora"], rank=8)
    xgb = Method.engine_defaults("xgb-default")
    return [(m, Setup(data="sample:unicode-names", seq_len=128, steps=steps, seed=seed, eval_every=50, answer_items=0))
            for seed in seeds for m in (lora, xgb)]


def best(row: dict) -> tuple[float, int]:
    """The lowest held-out loss along the curve, and its step."""
    e = min(row["evals"][1:], key=lambda e: e["loss"])
    return e["loss"], e["step"]


def report(rows: list[dict]) -> str:
    groups = {name: [r for r in rows if r["method"]["name"] == name] for name in ("lora-r8", "xgb-default")}
    lora = groups["lora-r8"]
    lines = [f"#### sample:unicode-names, {rows[0]['setup']['steps']} steps, seeds "
             f"{','.join(str(r['setup']['seed']) for r in lora)} (mean ± standard deviation)", "",
             "| method | held-out loss at the end | − LoRA r=8, same seed | lowest along the curve | − LoRA r=8 | at step |",
             "|:--|--:|--:|--:|--:|--:|"]
    for name, group in groups.items():
        lows = [best(r) for r in group]
        low_diff = [b[0] - best(r)[0] for b, r in zip(lows, lora)]
        lines.append(f"| {name} | {mean_spread([r['final_eval_loss'] for r in group])} "
                     f"| {mean_spread(paired(group, lora, 'final_eval_loss'))} | {mean_spread([b[0] for b in lows])} "
                     f"| {mean_spread(low_diff)} | {', '.join(str(b[1]) for b in lows)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    rows = run_all("long_run", jobs(args.steps, [int(s) for s in args.seeds.split(",")]))
    (RESULTS / "long_run.md").write_text(report(rows), encoding="utf-8")
    groups = [[r for r in rows if r["method"]["name"] == n] for n in ("lora-r8", "xgb-default")]
    plot_mean_curves(groups, RESULTS / "long_run_unicode-names.png", f"unicode-names, {args.steps} steps")
    print(report(rows))


if __name__ == "__main__":
    main()
