"""The levers on top of the defaults they were screened against, each on three seeds and
both bundled sets; the quality preset and the linear rule also on the third set,
word-definitions (larger, everyday English, tuned on by nothing). On the rank 4 defaults
(before rank 8 passed here and became the default): rank 8, 16 and 32 boosters, κ 10 and
40, LoRA+ (B's rate ×4 and ×16), layers drawn by gradient norm. On the rank 8 defaults of then
(a third of the layers drawn uniformly, B restarted; ``Method.previous_defaults``): B
carried between rounds too (``boost.carry_b``), with and without the per-round warmup,
and the rate that grows as L/k (``train.lr_rule = linear``), alone and with B carried;
the quality preset's k = 2L/3 (20 of the embedded model's 30 layers), the line search, and
no global decay (the rate held at its peak, every round's warmup kept); top-biased layer
draws (weight ∝ depth: backward stops higher) at k = L/3 and at k = L/2. Besides the
L/k rate with B carried, two arms combine levers: the top-biased half with B carried and
no round warmup (the two that had gained at the defaults' cost), and the quality preset's
k = 2L/3 with the same carry. Two arms are diagnostics, not candidates: the top half of
the layers every round with B carried (LoRA on the top half, merged every κ steps),
against the top-biased half, which draws a low layer now and then. On the defaults now
(the top-biased half with A, B and the moments carried, whose rounds no longer start
cold): κ 5, 10 and 40, rank 16, the rate ×1.5, the rate per layer by its share of the
draws, the gradient start aimed once per module; a first round on every layer (a
diagnostic of where the gap is made); every layer every round (LoRA r=8 merged
every κ steps, a diagnostic that became the quality preset) and two thirds drawn
top-biased, its rival; a sixth of the layers, a candidate for the fast preset; and the
defaults given 1.25× and 1.11× the steps, what LoRA r=8's time buys at 0.8× and 0.9× its
step time. Every other arm
changes one thing of its base; each is paired by seed with the base's own run (the
comparison's ``xgb-r4``, ``xgb-third`` or ``xgb-default`` rows, the same runs: a run is deterministic
per seed), and a lever passes the bar for a default only when its mean gain exceeds
twice its paired spread on every set it ran on.

    python -m benchmarks.levers [--seeds 0,1,2] [--only LEVER] [--data SET]
    python -m benchmarks.levers --cost rank 8    # step time and peak of a lever against the defaults

Writes results/levers.{json,md}; ``--cost`` runs the base and the named lever one at a
time on an otherwise idle machine (40 steps, every set) into results/levers_cost.{json,md}. Each run is minutes on one core; the harness of
``compare`` (a fresh process per run, evaluation every 10 steps).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics

from benchmarks.compare import DATASETS, paired
from benchmarks.harness import RESULTS, Method, Setup, data_name
from benchmarks.suite import load_rows, mean_spread, run_all

BASES = {  # the comparison's rows a lever is paired with -> (what they are, the defaults they start from, their changes)
    "xgb-r4": ("rank 4", Method.previous_defaults, {"rank": 4}),
    "xgb-third": ("rank 8", Method.previous_defaults, {}),
    "xgb-default": ("defaults now", Method.engine_defaults, {}),
}
LEVERS = {  # label -> (its base, what changes from that base)
    "rank 8": ("xgb-r4", {"rank": 8}),
    "rank 16": ("xgb-r4", {"rank": 16}),
    "rank 32": ("xgb-r4", {"rank": 32}),
    "κ 10": ("xgb-r4", {"kappa": 10}),
    "κ 40": ("xgb-r4", {"kappa": 40}),
    "B ×4 (LoRA+)": ("xgb-r4", {"lr_ratio_b": 4.0}),
    "B ×16 (LoRA+)": ("xgb-r4", {"lr_ratio_b": 16.0}),
    "layers ∝ gradient norm": ("xgb-r4", {"sampling": "gradient"}),
    "B carried too": ("xgb-third", {"optimizer_state": "carry-b"}),
    "B carried too, no round warmup": ("xgb-third", {"optimizer_state": "carry-b", "warmup": 0}),
    "lr ∝ L/k": ("xgb-third", {"lr_rule": "linear"}),
    "lr ∝ L/k, B carried, no round warmup": ("xgb-third", {"lr_rule": "linear", "optimizer_state": "carry-b",
                                                           "warmup": 0}),
    "k 2L/3 (the quality preset)": ("xgb-third", {"k": 20}),
    "line search": ("xgb-third", {"line_search": True}),
    "no global decay": ("xgb-third", {"schedule": "constant"}),
    "top-biased draws": ("xgb-third", {"sampling": "top-biased"}),
    "top-biased draws, k L/2": ("xgb-third", {"sampling": "top-biased", "k": 15}),
    "top-biased, k L/2, B carried, no round warmup": ("xgb-third", {"sampling": "top-biased", "k": 15,
                                                                    "optimizer_state": "carry-b", "warmup": 0}),
    "k 2L/3, B carried, no round warmup": ("xgb-third", {"k": 20, "optimizer_state": "carry-b", "warmup": 0}),
    # a diagnostic, not a candidate: the top half every round, so the low layers never train
    "top half only, B carried, no round warmup": ("xgb-third", {"layers": list(range(15, 30)),
                                                                "optimizer_state": "carry-b", "warmup": 0}),
    # on the defaults now: with A, B and the moments carried, κ only sets how often the drawn
    # layers change, no longer how often a booster starts cold
    "κ 10, defaults now": ("xgb-default", {"kappa": 10}),
    "κ 5, defaults now": ("xgb-default", {"kappa": 5}),
    "κ 40, defaults now": ("xgb-default", {"kappa": 40}),
    "rank 16, defaults now": ("xgb-default", {"rank": 16}),
    "lr ×1.5, defaults now": ("xgb-default", {"lr": 9e-3}),
    # a diagnostic, not a candidate: every layer every round, which with A, B and the moments
    # carried is LoRA r=8 merged every κ steps; level with LoRA if the gap is the share of layers
    "every layer, defaults now": ("xgb-default", {"k_share": 1.0}),
    # between the two: two thirds of the layers, still drawn top-biased (backward stops higher)
    "k 2L/3, defaults now": ("xgb-default", {"k_share": 2 / 3}),
    # the fast preset's share of the layers with the defaults' carry: a candidate for that preset
    "k L/6, defaults now": ("xgb-default", {"k_share": 1 / 6}),
    # the scaled rule per layer, with each layer's share of the draws for k/L
    "rate by draw share, defaults now": ("xgb-default", {"lr_rule": "drawn"}),
    # a diagnostic, not a candidate (its peak is LoRA's): is the gap made in the first round?
    "every layer in round 1, defaults now": ("xgb-default", {"warm_rounds": 1}),
    # LoRA-GA's start of A, aimed once per module: a module's later boosters continue its first
    "gradient start, defaults now": ("xgb-default", {"init": "gradient-first"}),
    # not a lever but the equal-time target: the defaults given the steps that LoRA r=8's
    # time buys at 0.8x its step time (the time target), the schedule spanning them all
    "1.25x the steps, defaults now": ("xgb-default", {}),
    # the same at the step time measured in one process, about 0.9x LoRA r=8's
    "1.1x the steps, defaults now": ("xgb-default", {}),
}
STEPS_SCALE = {"1.25x the steps, defaults now": 1.25, "1.1x the steps, defaults now": 1.11}  # label -> its steps over the set's


def base_method(base: str, name: str | None = None, **changes) -> Method:
    _, defaults, own = BASES[base]
    return defaults(name or base, **{**own, **changes})


def lever_method(label: str) -> Method:
    base, changes = LEVERS[label]
    return base_method(base, label, **changes)


def setups(seeds: list[int], sets: list[str], steps_scale: float = 1.0) -> list[Setup]:
    return [Setup(data=data, seq_len=seq_len, steps=round(steps * steps_scale), seed=seed, eval_every=10,
                  answer_items=0)
            for data, (seq_len, steps) in DATASETS.items() if data in sets for seed in seeds]


def jobs(seeds: list[int], labels: list[str], sets: list[str]) -> list[tuple[Method, Setup]]:
    return [(lever_method(label), s) for label in labels
            for s in setups(seeds, sets, STEPS_SCALE.get(label, 1.0))]


def reference(data: str, base: str) -> list[dict]:
    """The base's runs in the comparison on ``data`` (one per seed)."""
    rows = json.loads((RESULTS / f"compare_{data_name(data)}.json").read_text())["rows"]
    return [r for r in rows if r["method"]["name"] == base]


def report(rows: list[dict]) -> str:
    # No time column: these runs shared the machine with other work, unlike benchmarks/step_cost.py.
    lines = ["| lever | on | set | seeds | held-out loss | − its base, same seed | gain / paired spread | clipped steps |",
             "|:--|:--|:--|--:|--:|--:|--:|--:|"]
    verdicts = {}
    for label, (base_name, _) in LEVERS.items():
        for data in DATASETS:
            mine = [r for r in rows if r["method"]["name"] == label and r["setup"]["data"] == data]
            if not mine:  # before its base is read: a set may have no comparison yet
                continue
            base = reference(data, base_name)
            diff = paired(mine, base, "final_eval_loss")
            spread = statistics.stdev(diff) if len(diff) > 1 else float("nan")
            ratio = -statistics.mean(diff) / spread if spread == spread and spread > 0 else float("nan")
            if label not in STEPS_SCALE:  # more steps is a budget, not a candidate for a default
                verdicts.setdefault(label, []).append(ratio > 2)
            clipped = statistics.mean(r["clipped_share"] for r in mine)
            lines.append(f"| {label} | {BASES[base_name][0]} | {data_name(data)} | {len(mine)} | "
                         f"{mean_spread([r['final_eval_loss'] for r in mine])} | {mean_spread(diff)} | "
                         f"{'–' if ratio != ratio else f'{ratio:+.1f}'} | {100 * clipped:.0f} % |")
    passed = [label for label, v in verdicts.items() if len(v) >= 2 and all(v)]
    lines += ["", "Gain above twice its paired spread on every set it ran on, at least two (the loss half of "
              "the bar for a default; the other half, no worse time and memory, is --cost's): "
              + (", ".join(passed) if passed else "none") + "."]
    return "\n".join(lines) + "\n"


def cost(label: str) -> str:
    """Step time and peak of the lever and of its base, one run at a time."""
    base = LEVERS[label][0]
    pair = [base_method(base), lever_method(label)]
    lines = [f"#### {label}", "", "| set | method | step s | step time × | peak MB | peak × |",
             "|:--|:--|--:|--:|--:|--:|"]
    for data, (seq_len, _) in DATASETS.items():
        setup = Setup(data=data, seq_len=seq_len, steps=40, eval_every=0, eval_examples=8, answer_items=0)
        base, mine = run_all("levers_cost", [(m, setup) for m in pair])
        for row in (base, mine):
            lines.append(f"| {data_name(data)} | {row['method']['name']} | {row['step_wall_s']:.3f} | "
                         f"{row['step_wall_s'] / base['step_wall_s']:.3f} | {row['peak_bytes'] / 2**20:.0f} | "
                         f"{row['peak_bytes'] / base['peak_bytes']:.3f} |")
    return "\n".join(lines) + "\n"


def add_section(path, text: str) -> None:
    """Put one lever's cost table (a "#### label" section) into the file, in place of that
    lever's earlier one; the other levers' tables stay."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    sections = {block.split("\n", 1)[0]: block.rstrip("\n") + "\n"
                for block in re.split(r"(?m)^(?=#### )", old) if block.startswith("#### ")}
    sections[text.split("\n", 1)[0]] = text
    path.write_text("\n".join(sections.values()), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", choices=list(DATASETS), help="one set only")
    parser.add_argument("--only", nargs="+", metavar="LEVER", help="run this lever only (the table still shows all)")
    parser.add_argument("--cost", nargs="+", metavar="LEVER", help="time a lever against its base instead")
    args = parser.parse_args()
    if args.cost:
        text = cost(" ".join(args.cost))
        add_section(RESULTS / "levers_cost.md", text)
        print(text)
        return
    labels = [" ".join(args.only)] if args.only else list(LEVERS)
    sets = [args.data] if args.data else list(DATASETS)
    run_all("levers", jobs([int(s) for s in args.seeds.split(",")], labels, sets))
    rows = load_rows("levers")
    (RESULTS / "levers.md").write_text(report(rows), encoding="utf-8")
    print(report(rows))


if __name__ == "__main__":
    main()
