"""XGBLoRA against PEFT LoRA (r = 1, 8, 16 on every target linear) and full fine-tuning,
on the same model, data order, steps, batch, sequence length and seed.

Two data sets, both built offline from the Python standard library and redistributable:
``unicode-names`` (a checkable answer: the character's Unicode name, scored by exact
match of the greedy answer) and ``python-topics`` (instruction following: the first
sentences of the official documentation, scored by token F1).

Every method gets its own learning rate from a small sweep (``--sweep``: three values
per family on the first data set, results/lr_sweep.json); the comparison reads it.

    python -m benchmarks.compare --sweep      # once: learning rate per method family
    python -m benchmarks.compare              # the table: results/compare.{json,md}, plots
    python -m benchmarks.compare --model HuggingFaceTB/SmolLM2-360M-Instruct --device cuda
    python -m benchmarks.compare --quick      # two methods, a few steps: the script works
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from benchmarks.harness import RESULTS, Method, Setup, add_common_flags, setup_from_args
from benchmarks.suite import MB, describe, loss_at_seconds, plot_curves, run_all, table

DATASETS = {"sample:unicode-names": 128, "sample:python-topics": 192}  # data -> seq_len
SWEEP = {  # family -> learning rates tried
    "xgblora": [2e-3, 5e-3, 1e-2, 2e-2],
    "lora": [5e-4, 1e-3, 2e-3, 5e-3],
    "full": [5e-5, 1e-4],
}
DEFAULT_LR = {"xgblora": 5e-3, "lora": 1e-3, "full": 5e-5}


def methods(lr: dict[str, float]) -> list[Method]:
    x, lo = lr["xgblora"], lr["lora"]
    return [
        Method("lora-r8", "lora", lo, rank=8),  # the baseline every ratio is taken against
        Method("lora-r1", "lora", lo, rank=1),
        Method("lora-r16", "lora", lo, rank=16),
        Method("full", "full", lr["full"]),
        Method("xgb-paper", lr=x),  # r=1, k≈L/3, κ=10: the paper's setting
        Method("xgb-default", lr=x, rank=4, kappa=20),  # the engine's defaults, from the ablations
        Method("xgb-fast", lr=x, rank=4, k=5, kappa=20, sampling="top-biased"),  # the "fast" preset, 30 layers
        Method("xgb-quality", lr=x, rank=4, k=20, kappa=20),  # the "quality" preset, 30 layers
    ]


# The second data set has longer examples; on a CPU it gets the methods that matter most.
SECOND = ("lora-r8", "lora-r1", "full", "xgb-paper", "xgb-default")


def sweep(base: Setup) -> dict[str, float]:
    jobs = []
    for family, rates in SWEEP.items():
        kind, rank = ("lora", 8) if family == "lora" else (family, 1)
        jobs += [(Method(f"{family}-lr{lr:g}", kind, lr, rank=rank), replace(base, answer_items=0)) for lr in rates]
    rows = run_all("lr_sweep", jobs)
    best = {}
    for family in SWEEP:
        mine = [r for r in rows if r["method"]["name"].startswith(family + "-")]
        best[family] = min(mine, key=lambda r: r["final_eval_loss"])["method"]["lr"]
    (RESULTS / "lr_sweep_best.json").write_text(json.dumps(best, indent=1))
    print("best learning rates:", best)
    return best


def chosen_lr() -> dict[str, float]:
    path = RESULTS / "lr_sweep_best.json"
    return json.loads(path.read_text()) if path.exists() else DEFAULT_LR


def report(rows: list[dict], data: str) -> str:
    """The comparison table of one data set, ratios against LoRA r=8."""
    base = next(r for r in rows if r["method"]["name"] == "lora-r8")
    budget = min(r["train_wall_s"] for r in rows)  # every method has trained this long
    columns = [
        ("method", ":--", lambda r: describe(r["method"], r.get("k"))),
        ("lr", "--:", lambda r: f"{r['method']['lr']:g}"),
        ("trainable params", "--:", lambda r: f"{r['trainable_params']:,}"),
        ("held-out loss @ equal steps", "--:", lambda r: r["final_eval_loss"]),
        (f"@ equal time ({budget:.0f} s)", "--:", lambda r: loss_at_seconds(r, budget)),
        ("exact match" if "unicode" in data else "token F1", "--:",
         lambda r: r["exact_match"] if "unicode" in data else r["token_f1"]),
        ("step time ×", "--:", lambda r: r["step_wall_s"] / base["step_wall_s"]),
        ("step CPU ×", "--:", lambda r: r["step_cpu_s"] / base["step_cpu_s"]),
        ("peak MB", "--:", lambda r: r["peak_bytes"] / MB),
        ("peak ×", "--:", lambda r: r["peak_bytes"] / base["peak_bytes"]),
        ("training overhead ×", "--:", lambda r: r["overhead_bytes"] / base["overhead_bytes"]),
        ("merge % of round", "--:", lambda r: None if r["merge_fraction"] is None else 100 * r["merge_fraction"]),
    ]
    return table(rows, columns)


def where(row: dict) -> str:
    threads = row.get("threads")
    return row["device"] + (f", {threads} thread{'s' if threads != 1 else ''}" if row["device"] == "cpu" and threads else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    ap.add_argument("--sweep", action="store_true", help="choose each family's learning rate first")
    ap.add_argument("--all", action="store_true", help="every method and step on the second data set too")
    args = ap.parse_args()
    base = setup_from_args(args, steps=150, eval_every=25)
    if args.quick:
        base = replace(base, steps=4, eval_every=2, eval_examples=4, answer_items=2)
    if args.sweep:
        sweep(replace(base, data=next(iter(DATASETS)), seq_len=DATASETS[next(iter(DATASETS))]))
        return
    lr = chosen_lr()
    chosen = methods(lr)
    datasets = [args.data] if args.data else list(DATASETS)
    if args.quick:
        chosen, datasets = [chosen[0], chosen[5]], datasets[:1]
    out = "compare_quick" if args.quick else "compare"
    sections = []
    for data in datasets:
        setup = replace(base, data=data, seq_len=DATASETS.get(data, base.seq_len))
        mine = chosen
        if data != next(iter(DATASETS)) and not args.all:
            mine = [m for m in chosen if m.name in SECOND]
            setup = replace(setup, steps=min(setup.steps, 100), eval_every=20)
        stem = f"{out}_{data.split(':')[-1]}"
        rows = run_all(stem, [(m, setup) for m in mine])
        plot_curves(rows, RESULTS / f"{stem}_steps.png", f"{data}: held-out loss by step")
        plot_curves(rows, RESULTS / f"{stem}_time.png", f"{data}: held-out loss by training time", x="time")
        sections.append(f"### {data} ({setup.steps} steps, batch {setup.batch}, seq {setup.seq_len}, "
                        f"model {setup.model}, {where(rows[0])})\n\n{report(rows, data)}")
    (RESULTS / f"{out}.md").write_text("\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
