"""Step time and peak of uniform and top-biased layer draws (the latter also with B carried,
the defaults, and two thirds uniform with B carried, the quality preset), as ratios against
LoRA r=8.

Autograd stops at the lowest layer that trains, so where a round's layers are drawn sets
how far backward runs: ten uniform draws of thirty layers reach layer 1.7 on average,
fifteen top-biased ones (weight ∝ depth) layer 4.5. Single 40-step timings on this machine
move by 20 % from one run to the next, more than the difference sought, so every method
runs ``--repeats`` times, interleaved (LoRA, uniform, top-biased, LoRA, …: a slow spell
falls on all of them), each repeat on its own seed, and the table gives the median over
the repeats of each run's median step. One more run each measures the live peak
(``Setup.live_memory``: the measure of a GPU's allocator).

    python -m benchmarks.sampling_cost [--data SET] [--repeats 3] [--steps 40] [--quick]
    python -m benchmarks.sampling_cost --presets     # the presets' candidates instead

``--presets`` times LoRA r=8, the defaults, the quality preset of before and its two
candidates (every layer every round; two thirds drawn top-biased), the fast preset of
before and its candidate (a sixth with the defaults' carry), into
results/preset_cost_<set>.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

from benchmarks.compare import DATASETS, chosen_lr, where
from benchmarks.harness import RESULTS, Method, Setup, add_common_flags, data_name, setup_from_args
from benchmarks.suite import MB, describe, run_all, table

WORD_DEFINITIONS = "benchmarks/data/word-definitions.jsonl"  # the set nothing was tuned on


def arms() -> list[Method]:
    """LoRA r=8, a third of the layers drawn uniformly with B restarted each round (the
    previous defaults), half of them drawn top-biased, that half with B carried and no round
    warmup (the defaults now), and two thirds drawn uniformly with B carried (the quality
    preset now): each spelled out, so the arms stay what they are when the defaults move."""
    uniform = Method.engine_defaults("xgb-uniform-k10", sampling="uniform", k=10, optimizer_state="carry", warmup=2)
    top_biased = replace(uniform, name="xgb-top-biased-k15", sampling="top-biased", k=15)
    carried = {"optimizer_state": "carry-b", "warmup": 0}
    return [Method("lora-r8", "lora", chosen_lr()["lora"], rank=8), uniform, top_biased,
            replace(top_biased, name="xgb-top-biased-k15-carry-b", **carried),
            replace(uniform, name="xgb-uniform-k20-carry-b", k=20, **carried)]


def preset_arms() -> list[Method]:
    """LoRA r=8; the defaults now; the quality preset before (two thirds uniform) and its
    two candidates, every layer and two thirds drawn top-biased, carried as the defaults;
    the fast preset before (a sixth top-biased, B restarted after a 2-step warmup) and its
    candidate, the same sixth carried as the defaults."""
    lora, _, top_biased, carried_k15, uniform_k20 = arms()
    every = replace(carried_k15, name="xgb-every-layer", k=None, k_share=1.0)
    top_k20 = replace(carried_k15, name="xgb-top-biased-k20-carry-b", k=20)
    fast = replace(top_biased, name="xgb-top-biased-k5", k=5)
    fast_carried = replace(carried_k15, name="xgb-top-biased-k5-carry-b", k=5)
    return [lora, carried_k15, uniform_k20, every, top_k20, fast, fast_carried]


def interleaved(setup: Setup, methods: list[Method], repeats: int) -> list[tuple[Method, Setup]]:
    return [(m, replace(setup, seed=seed)) for seed in range(repeats) for m in methods]


def report(timed: list[dict], live: list[dict]) -> str:
    def median_of(name: str, key: str) -> float:
        return statistics.median(r[key] for r in timed if r["method"]["name"] == name)

    base = {key: median_of("lora-r8", key) for key in ("step_wall_s", "peak_bytes")}
    live_of = {r["method"]["name"]: r["peak_bytes"] for r in live}
    firsts = list({r["method"]["name"]: r for r in timed}.values())
    columns = [
        ("method", ":--", lambda r: describe(r["method"], r.get("k"))),
        ("runs", "--:", lambda r: sum(x["method"]["name"] == r["method"]["name"] for x in timed)),
        ("step s (median)", "--:", lambda r: median_of(r["method"]["name"], "step_wall_s")),
        ("each run's step × LoRA r=8's, same repeat", ":--", lambda r: ", ".join(
            f"{x['step_wall_s'] / y['step_wall_s']:.2f}" for x, y in zip(
                [x for x in timed if x["method"]["name"] == r["method"]["name"]],
                [y for y in timed if y["method"]["name"] == "lora-r8"]))),
        ("step time ×", "--:", lambda r: median_of(r["method"]["name"], "step_wall_s") / base["step_wall_s"]),
        ("RSS peak ×", "--:", lambda r: median_of(r["method"]["name"], "peak_bytes") / base["peak_bytes"]),
        ("live peak MB", "--:", lambda r: live_of[r["method"]["name"]] / MB),
        ("live peak ×", "--:", lambda r: live_of[r["method"]["name"]] / live_of["lora-r8"]),
    ]
    return table(firsts, columns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presets", action="store_true", help="the presets' candidates instead")
    args = ap.parse_args()
    setup = setup_from_args(args, data=WORD_DEFINITIONS, steps=40, eval_every=0, eval_examples=8, answer_items=0)
    setup = replace(setup, seq_len=DATASETS.get(setup.data, (setup.seq_len,))[0])
    methods, repeats = preset_arms() if args.presets else arms(), args.repeats
    if args.quick:
        setup, methods, repeats = replace(setup, steps=4), methods[:2], 1
    stem = ("preset_cost_" if args.presets else "sampling_cost_") + ("quick_" if args.quick else "")
    stem += data_name(setup.data)
    timed = run_all(stem, interleaved(setup, methods, repeats))
    live = run_all(stem, [(m, replace(setup, live_memory=True)) for m in methods])
    text = (f"### {setup.data} ({setup.steps} steps, batch {setup.batch}, seq {setup.seq_len}, {where(timed[0])}, "
            f"one run at a time, {repeats} interleaved repeats)\n\n{report(timed, live)}")
    (RESULTS / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
