"""XGBLoRA at the engine's defaults and presets against PEFT LoRA (r = 1 and 8 on every
target linear), on the same model, data order, steps, batch and sequence length, each arm
on several seeds (mean and spread in every table).

Four data sets, built offline and redistributable: the bundled ``unicode-names`` (a
checkable answer: the character's Unicode name, scored by exact match of the greedy
answer) and ``python-topics`` (instruction following: the first sentences of the official
documentation, scored by token F1), ``word-definitions`` (3000 WordNet definitions of
common English words, larger and tuned on by nothing; benchmarks/word_definitions.py) and
``number-words`` (3000 numbers and dates to write in words, in digits or in Roman numerals:
a rule to learn rather than facts to recall, scored by exact match; benchmarks/number_words.py).

LoRA's learning rate comes from a sweep (``--sweep``, results/lr_sweep_best.json);
XGBLoRA runs at the engine's own defaults, learning-rate rule included, so what is
measured is what a user gets without tuning.

    python -m benchmarks.compare --sweep      # once: learning rate per method family
    python -m benchmarks.compare --sweep --data benchmarks/data/word-definitions.jsonl --only lora  # a check
    python -m benchmarks.compare              # the tables: results/compare.{json,md}, plots
    python -m benchmarks.compare --model HuggingFaceTB/SmolLM2-360M-Instruct --device cuda
    python -m benchmarks.compare --data benchmarks/data/word-definitions.jsonl --only lora-r8 xgb-default
    python -m benchmarks.compare --data benchmarks/data/word-definitions.jsonl --seeds 3,4,5  # more seeds
    python -m benchmarks.compare --tables     # the tables and plots of every saved run, nothing run
    python -m benchmarks.compare --quick      # two methods, a few steps: the script works
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

from benchmarks.harness import RESULTS, Method, Setup, add_common_flags, data_name, setup_from_args
from benchmarks.suite import (
    MB,
    describe,
    job_key,
    job_key_of,
    load_rows,
    loss_at_seconds,
    mean_spread,
    plot_mean_curves,
    run_all,
    table,
)

# data -> seq_len, steps; the third to fifth are larger and of other kinds, tuned on by
# nothing (benchmarks/word_definitions.py, number_words.py, iso_codes.py)
DATASETS = {"sample:unicode-names": (128, 150), "sample:python-topics": (192, 100),
            "benchmarks/data/word-definitions.jsonl": (128, 150), "benchmarks/data/number-words.jsonl": (128, 150),
            "benchmarks/data/iso-codes.jsonl": (128, 150)}
EXACT_ANSWERS = {  # one right answer: exact match
    "sample:unicode-names", "benchmarks/data/number-words.jsonl", "benchmarks/data/iso-codes.jsonl"}
SEEDS = (0, 1, 2)
SWEEP = {  # family -> learning rates tried
    "xgblora": [2e-3, 5e-3, 1e-2, 2e-2],
    "lora": [5e-4, 1e-3, 2e-3, 5e-3],
    "full": [5e-5, 1e-4],
}
DEFAULT_LR = {"xgblora": 5e-3, "lora": 1e-3, "full": 5e-5}


def methods(lr: dict[str, float]) -> tuple[list[Method], list[Method]]:
    """(core, extra): the core arms run on every seed, the extra ones on the first seed
    unless --all-seeds (a CPU budget: each run is minutes on one core)."""
    lora = lr["lora"]
    core = [
        Method("lora-r8", "lora", lora, rank=8),  # the baseline every ratio is taken against
        Method.engine_defaults("xgb-default"),
        # the defaults before the top-biased half (a third of the layers drawn uniformly, B
        # restarted), before that at rank 4, and before boost.carry (every round a fresh A
        # and fresh Adam moments)
        Method.previous_defaults("xgb-third"),
        Method.previous_defaults("xgb-r4", rank=4),
        Method.previous_defaults("xgb-fresh", rank=4, optimizer_state="fresh"),
    ]
    extra = [
        Method("lora-r1", "lora", lora, rank=1),
        Method.previous_defaults("xgb-fast", k=5, sampling="top-biased"),  # the "fast" preset, 30 layers
        # the defaults before the learning-rate rule: r=4, k≈L/3, κ=20 at a literal 1e-2, fresh rounds
        Method.previous_defaults("xgb-lr1e-2", rank=4, lr=1e-2, lr_rule="fixed", optimizer_state="fresh"),
    ]
    return core, extra


def sweep(base: Setup, families: list[str] | None = None, choose: bool = True) -> dict[str, float]:
    """The best rate of each family on ``base``'s data; with ``choose``, kept as the rates
    the comparison runs at (the first set's sweep chooses them; another set's only checks)."""
    families = families or list(SWEEP)
    jobs = []
    for family in families:
        rates = SWEEP[family]
        kind, rank = ("lora", 8) if family == "lora" else (family, 1)
        share = 1 / 3 if kind == "xgblora" else None  # XGBLoRA's sweep ran at k = L/3
        jobs += [(Method(f"{family}-lr{lr:g}", kind, lr, rank=rank, k_share=share), replace(base, answer_items=0))
                 for lr in rates]
    rows = run_all("lr_sweep", jobs)
    best = {}
    for family in families:
        mine = [r for r in rows if r["method"]["name"].startswith(family + "-")]
        best[family] = min(mine, key=lambda r: r["final_eval_loss"])["method"]["lr"]
    if choose:
        (RESULTS / "lr_sweep_best.json").write_text(json.dumps(best, indent=1))
    print(f"best learning rates on {base.data}:", best)
    return best


def chosen_lr() -> dict[str, float]:
    path = RESULTS / "lr_sweep_best.json"
    return json.loads(path.read_text()) if path.exists() else DEFAULT_LR


def by_method(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by method name, in first-seen order (one row per seed)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["method"]["name"], []).append(r)
    return groups


def report(rows: list[dict], data: str) -> str:
    """The comparison table of one data set: mean ± spread over seeds, ratios against LoRA r=8."""
    groups = by_method(rows)
    base = groups["lora-r8"]
    # Equal time: CPU seconds of training (steadier than wall time on a shared machine),
    # the budget every run of every method has reached.
    budget = min(r["train_cpu_s"] for r in rows)

    def ratio(key):
        return lambda g: mean_spread([r[key] for r in g], scale=1 / _mean([r[key] for r in base]))

    score, score_label = ("exact_match", "exact match") if data in EXACT_ANSWERS else ("token_f1", "token F1")
    columns = [
        ("method", ":--", lambda g: describe(g[0]["method"], g[0].get("k"))),
        ("seeds", "--:", lambda g: str(len(g))),
        ("held-out loss @ equal steps", "--:", lambda g: mean_spread([r["final_eval_loss"] for r in g])),
        # each seed holds out its own examples: differences taken within a seed are the steadier measure
        ("− LoRA r=8, same seed", "--:", lambda g: mean_spread(paired(g, base, "final_eval_loss"))),
        (f"@ equal CPU time ({budget:.0f} s)", "--:",
         lambda g: mean_spread([loss_at_seconds(r, budget, "train_cpu") for r in g])),
        (score_label, "--:", lambda g: scored(g, score)),
        ("step time ×", "--:", ratio("step_wall_s")),
        ("step CPU ×", "--:", ratio("step_cpu_s")),
        ("peak MB", "--:", lambda g: f"{_mean([r['peak_bytes'] for r in g]) / MB:.0f}"),
        ("peak ×", "--:", ratio("peak_bytes")),
        ("largest rise of the mean curve / seed spread there", "--:", lambda g: "{:.3f} / {:.3f}".format(*rise_and_spread(g))),
        ("clipped steps", "--:", lambda g: f"{100 * _mean([r.get('clipped_share', 0) for r in g]):.0f} %"),
        ("merge % of round", "--:", lambda g: "–" if g[0]["merge_fraction"] is None
         else f"{100 * _mean([r['merge_fraction'] for r in g]):.2f}"),
    ]
    return table(list(groups.values()), columns)


def paired(group: list[dict], base: list[dict], key: str) -> list[float]:
    """``key`` of each run minus that of the base method's run on the same seed."""
    by_seed = {r["setup"]["seed"]: r[key] for r in base}
    return [r[key] - by_seed[r["setup"]["seed"]] for r in group if r["setup"]["seed"] in by_seed]


def rise_and_spread(group: list[dict]) -> tuple[float, float]:
    """The largest rise of the seed-mean held-out curve between two evaluations, and the
    standard deviation between seeds at the evaluation it rose to (0 with one seed)."""
    n = min(len(r["evals"]) for r in group)
    columns = list(zip(*[[e["loss"] for e in r["evals"][:n]] for r in group]))
    mean = [_mean(col) for col in columns]
    rises = [(b - a, i + 1) for i, (a, b) in enumerate(zip(mean, mean[1:]))]
    rise, at = max(rises + [(0.0, 0)])  # a curve that only falls rises by 0
    if len(group) < 2:
        return rise, 0.0
    return rise, math.sqrt(sum((v - mean[at]) ** 2 for v in columns[at]) / (len(group) - 1))


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def where(row: dict) -> str:
    threads = row.get("threads")
    return row["device"] + (f", {threads} thread{'s' if threads != 1 else ''}" if row["device"] == "cpu" and threads else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    ap.add_argument("--sweep", action="store_true", help="choose each family's learning rate first")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--all-seeds", action="store_true", help="run LoRA r=1 and the fast preset on every seed too")
    ap.add_argument("--tables", action="store_true", help="write the tables and plots of the saved runs, run nothing")
    ap.add_argument("--only", nargs="+", metavar="METHOD", help="run these arms only, e.g. lora-r8 xgb-default "
                    "(the tables show every arm run so far)")
    args = ap.parse_args()
    base = setup_from_args(args, eval_every=10, answer_items=16)
    seeds = [int(s) for s in args.seeds.split(",")]
    first = next(iter(DATASETS))
    if args.quick:
        base, seeds = replace(base, steps=4, eval_every=2, eval_examples=4, answer_items=2), seeds[:1]
    if args.sweep:  # on another set (--data) a check of the chosen rates, not a choice: --only FAMILY...
        data = args.data or first
        seq_len, steps = DATASETS.get(data, (base.seq_len, base.steps))
        if unknown := set(args.only or []) - set(SWEEP):
            ap.error(f"--sweep --only takes method families ({', '.join(SWEEP)}), not {', '.join(sorted(unknown))}")
        sweep(replace(base, data=data, seq_len=seq_len, steps=args.steps or steps), args.only, choose=data == first)
        return
    core, extra = methods(chosen_lr())
    datasets = [args.data] if args.data else list(DATASETS)
    if args.quick:
        core, extra, datasets = core[:2], [], datasets[:1]
    out = "compare_quick" if args.quick else "compare"

    def jobs(data: str, seeds: list[int], extra_seeds: list[int]) -> list[tuple[Method, Setup]]:
        """Seed-major, core arms first: an interrupted suite still has every core arm on the first seeds."""
        seq_len, steps = DATASETS.get(data, (base.seq_len, base.steps))
        setup = replace(base, data=data, seq_len=seq_len, steps=base.steps if args.steps or args.quick else steps)
        order = [(m, s) for s in seeds for m in core] + [(m, s) for s in extra_seeds for m in extra]
        return [(m, replace(setup, seed=s)) for m, s in order]

    for data in [] if args.tables else datasets:
        todo = jobs(data, seeds, seeds[:None if args.all_seeds else 1])
        run_all(f"{out}_{data_name(data)}", [(m, s) for m, s in todo if not args.only or m.name in args.only])

    def tables_of(data: str) -> list[dict]:
        name = f"{out}_{data_name(data)}"
        every = table_seeds(seeds, load_rows(name))
        return saved(name, jobs(data, every, every))

    # the tables and plots of every set measured so far, not only of the one just run
    sections = [section(data, rows, out) for data in dict.fromkeys(datasets + list(DATASETS)) if (rows := tables_of(data))]
    (RESULTS / f"{out}.md").write_text("\n".join(sections))
    print("\n".join(sections))


def table_seeds(asked: list[int], rows: list[dict]) -> list[int]:
    """The seeds a set's table shows: those asked for and every one run before, so a call
    that adds seeds 3 and 4 does not hide seeds 0 to 2."""
    return sorted(set(asked) | {r["setup"]["seed"] for r in rows})


def scored(group: list[dict], score: str) -> str:
    """The greedy answers' score over the seeds that answered ("–" if none did; a run that
    stands in for its job has no answers)."""
    values = [r[score] for r in group if score in r]
    if not values:
        return "–"
    return mean_spread(values) + ("" if len(values) == len(group) else f" ({len(values)} of {len(group)} seeds)")


def saved(name: str, jobs: list[tuple[Method, Setup]]) -> list[dict]:
    """The rows of ``jobs`` already in results/<name>.json, in the jobs' order. A job's run
    without the greedy answers stands in for it (a lever's run, copied in when its method
    became the default): a run is deterministic per seed, so its losses and times are the
    job's; only the answer scores are missing."""
    rows = {job_key_of(r): r for r in load_rows(name)}
    found = (rows.get(job_key(m, s)) or rows.get(job_key(m, replace(s, answer_items=0))) for m, s in jobs)
    return [row for row in found if row is not None]


def section(data: str, rows: list[dict], out: str) -> str:
    """One set's plots (written beside) and its table under a heading that says how it was run."""
    stem = f"{out}_{data_name(data)}"
    groups = list(by_method(rows).values())
    plot_mean_curves(groups, RESULTS / f"{stem}_steps.png", f"{data}: held-out loss by step")
    plot_mean_curves(groups, RESULTS / f"{stem}_time.png", f"{data}: held-out loss by training CPU time",
                     x="train_cpu")
    setup = rows[0]["setup"]
    seeds = sorted({r["setup"]["seed"] for r in rows})
    return (f"### {data} ({setup['steps']} steps, batch {setup['batch']}, seq {setup['seq_len']}, "
            f"model {setup['model']}, {where(rows[0])}, seeds {','.join(map(str, seeds))}; "
            f"mean ± standard deviation over seeds)\n\n{report(rows, data)}")


if __name__ == "__main__":
    main()
