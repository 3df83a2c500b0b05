"""Step time and peak memory of the comparison's methods, measured one after another on
a machine with nothing else running, as ratios against LoRA r=8.

The comparison (benchmarks/compare.py) also records step times, but its two data sets
run side by side on two cores and share the machine with whatever else runs; these
runs are alone (40 steps: two rounds of layer draws at the default κ).

On the CPU every method runs twice. The first run gives the step time and the process's
RSS peak, which counts what the allocator kept after it was freed as well as what was
live. The second (``Setup.live_memory``) hands every large freed block back to the system,
so its peak is that of the live tensors: the measure CUDA's ``max_memory_allocated`` takes
on a GPU, and the one to read for a GPU. On CUDA one run gives both.

    python -m benchmarks.step_cost [--model default] [--device auto] [--steps 40] [--quick]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from benchmarks.compare import DATASETS, chosen_lr, methods, where
from benchmarks.harness import RESULTS, Method, add_common_flags, data_name, setup_from_args
from benchmarks.suite import MB, describe, run_all, table


def report(rows: list[dict], live: list[dict] | None = None) -> str:
    base = next(r for r in rows if r["method"]["name"] == "lora-r8")
    columns = [
        ("method", ":--", lambda r: describe(r["method"], r.get("k"))),
        ("step s", "--:", lambda r: r["step_wall_s"]),
        ("step time ×", "--:", lambda r: r["step_wall_s"] / base["step_wall_s"]),
        ("step CPU ×", "--:", lambda r: r["step_cpu_s"] / base["step_cpu_s"]),
        ("peak MB", "--:", lambda r: r["peak_bytes"] / MB),
        ("peak ×", "--:", lambda r: r["peak_bytes"] / base["peak_bytes"]),
        ("training overhead ×", "--:", lambda r: r["overhead_bytes"] / base["overhead_bytes"]),
    ]
    if live:
        live_of = {r["method"]["name"]: r for r in live}
        live_base = live_of["lora-r8"]
        columns += [
            ("live peak MB", "--:", lambda r: live_of[r["method"]["name"]]["peak_bytes"] / MB),
            ("live peak ×", "--:", lambda r: live_of[r["method"]["name"]]["peak_bytes"] / live_base["peak_bytes"]),
        ]
    return table(rows, columns)


def on_cpu(row: dict) -> bool:
    return not row["device"].startswith("cuda")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    args = ap.parse_args()
    base = setup_from_args(args, steps=40, eval_every=0, eval_examples=8, answer_items=0)
    core, extra = methods(chosen_lr())
    # LoRA r=8, the defaults, LoRA r=1, the fast preset, and the quality preset (30 layers)
    chosen = core[:2] + extra[:2] + [Method.engine_defaults("xgb-quality", k=20, sampling="uniform")]
    if args.quick:
        base, chosen = replace(base, steps=4), chosen[:2]
    sections = []
    for data, (seq_len, _) in list(DATASETS.items())[:1 if args.quick else None]:
        setup = replace(base, data=args.data or data, seq_len=seq_len)
        stem = ("step_cost_quick_" if args.quick else "step_cost_") + data_name(data)
        rows = run_all(stem, [(m, setup) for m in chosen])
        live = run_all(stem, [(m, replace(setup, live_memory=True)) for m in chosen]) if on_cpu(rows[0]) else None
        sections.append(f"### {setup.data} ({setup.steps} steps, batch {setup.batch}, seq {setup.seq_len}, "
                        f"{where(rows[0])}, one run at a time)\n\n{report(rows, live)}")
    out = RESULTS / ("step_cost_quick.md" if args.quick else "step_cost.md")
    out.write_text("\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
