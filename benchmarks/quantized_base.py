"""A 4-bit (nf4, bitsandbytes) frozen base against the full-precision one, same run.

The merged boosters of a quantized base stay beside it as an exact fp32 low-rank path
(boosting/merge.py), so the question is what the quantized base itself costs in quality,
and what it saves in memory and time. bitsandbytes' 4-bit kernels are slow on a CPU (a
step of SmolLM2 takes tens of seconds), so on a CPU the default run is short; on a GPU
pass --steps 100 for the real picture.

    python -m benchmarks.quantized_base [--model default] [--device auto] [--steps 6] [--quick]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from benchmarks.compare import chosen_lr
from benchmarks.harness import RESULTS, Method, add_common_flags, setup_from_args
from benchmarks.suite import MB, run_all, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    args = ap.parse_args()
    setup = setup_from_args(args, data="sample:unicode-names", steps=6, batch=2, eval_every=3,
                            eval_examples=8, answer_items=0)
    if args.quick:
        setup = replace(setup, steps=2, eval_every=1, eval_examples=2)
    method = Method("xgb-kappa3", lr=chosen_lr()["xgblora"], kappa=3, k_share=1 / 3)  # two merges even in a short run
    name = "quantized_base_quick" if args.quick else "quantized_base"
    rows = run_all(name, [(method, setup), (method, replace(setup, quantize="4bit"))])
    base = rows[0]
    text = table(rows, [
        ("base", ":--", lambda r: r["setup"]["quantize"].replace("none", "full precision")),
        ("held-out loss before", "--:", lambda r: r["initial_eval_loss"]),
        (f"after {setup.steps} steps", "--:", lambda r: r["final_eval_loss"]),
        ("step time ×", "--:", lambda r: r["step_wall_s"] / base["step_wall_s"]),
        ("loaded MB", "--:", lambda r: r["loaded_bytes"] / MB),
        ("peak MB", "--:", lambda r: r["peak_bytes"] / MB),
    ])
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
