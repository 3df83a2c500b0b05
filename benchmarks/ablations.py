"""One setting of XGBLoRA changed at a time from the defaults, everything else equal:
k (layers per round), κ (steps per round), rank, layer sampling, per-round warmup and
what happens to the Adam moments between rounds. Results decide the defaults
(docs/benchmarks.md says which result chose which).

    python -m benchmarks.ablations [--model default] [--device auto] [--steps 100] [--quick]

bf16 merging with and without the fp32 ledger, and a 4-bit base against the full one,
are in benchmarks/merge_precision.py and benchmarks/quantized_base.py.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from benchmarks.compare import chosen_lr
from benchmarks.harness import RESULTS, Method, add_common_flags, setup_from_args
from benchmarks.suite import MB, run_all, table

GROUPS = {  # group -> (field, values); the default is added to every group
    "k (layers per round)": ("k", [1, 3, 5, 20, 30]),
    "κ (steps per round)": ("kappa", [5, 20]),
    "rank": ("rank", [2, 4]),
    "layer sampling": ("sampling", ["stratified", "top-biased"]),
    "per-round warmup": ("warmup", [0]),
    "Adam moments between rounds": ("optimizer_state", ["carry"]),
}


def variants(default: Method) -> list[Method]:
    out = [default]
    for field, values in GROUPS.values():
        out += [replace(default, name=f"{field}={v}", **{field: v}) for v in values]
    return out


def report(rows: list[dict], default_name: str) -> str:
    base = next(r for r in rows if r["method"]["name"] == default_name)
    sections = []
    for group, (field, _) in GROUPS.items():
        mine = [base] + [r for r in rows if r["method"]["name"].startswith(field + "=")]
        value = (lambda r: r["k"]) if field == "k" else (lambda r, f=field: r["method"][f])
        mine.sort(key=value)
        columns = [
            (field, ":--", lambda r, v=value: f"{v(r)}" + (" (reference)" if r is base else "")),
            ("held-out loss", "--:", lambda r: r["final_eval_loss"]),
            ("exact match", "--:", lambda r: r["exact_match"]),
            ("token F1", "--:", lambda r: r["token_f1"]),
            ("trainable / round", "--:", lambda r: f"{r['trainable_params']:,}"),
            ("peak MB", "--:", lambda r: r["peak_bytes"] / MB),
            ("merge % of round", "--:", lambda r: 100 * (r["merge_fraction"] or 0)),
        ]
        sections.append(f"#### {group}\n\n{table(mine, columns)}")
    return "\n".join(sections)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    ap.add_argument("--lr", type=float, help="XGBLoRA learning rate (default: the sweep's choice)")
    args = ap.parse_args()
    setup = setup_from_args(args, data="sample:unicode-names", steps=100, eval_every=25)
    default = Method("default", lr=args.lr or chosen_lr()["xgblora"])  # the paper's r=1, k≈L/3, κ=10
    jobs = variants(default)
    out = "ablations"
    if args.quick:
        setup, jobs, out = replace(setup, steps=4, eval_every=2, eval_examples=4, answer_items=2), jobs[:2], "ablations_quick"
    rows = run_all(out, [(m, setup) for m in jobs])
    text = (f"({setup.steps} steps on {setup.data}, batch {setup.batch}, seq {setup.seq_len}, "
            f"model {setup.model}, {rows[0]['device']}; one setting changed at a time)\n\n" + report(rows, default.name))
    (RESULTS / f"{out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
