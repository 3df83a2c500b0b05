"""One lever of XGBLoRA changed at a time, everything else equal: how a booster starts,
its learning rate and rank, how long a round lasts, how many layers it boosts, what
happens to the Adam state between rounds, the schedule and clipping. A screen, not a
verdict: by default one seed (``--seeds 0,1,2`` for more); the comparison
(benchmarks/compare.py, three seeds, two data sets) decides the defaults.

    python -m benchmarks.ablations [--model default] [--device auto] [--steps 100] [--seeds 0] [--quick]

bf16 merging with and without the fp32 ledger, and a 4-bit base against the full one,
are in benchmarks/merge_precision.py and benchmarks/quantized_base.py.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from benchmarks.harness import RESULTS, Method, Setup, add_common_flags, setup_from_args
from benchmarks.suite import MB, mean_spread, run_all, table

# The reference: rank 4, k ≈ L/3 uniform, κ = 20, 2 warmup steps per round, fresh Adam
# state, kaiming start, at 5e-3 (the best of the rank-4 learning rates below; the
# engine's rule gives 5.2e-3 here).
REFERENCE = Method("reference", lr=5e-3, rank=4, kappa=20, k_share=1 / 3)

# group -> variants: (label, changes to the method, changes to the run config)
GROUPS: dict[str, list[tuple[str, dict, dict]]] = {
    "learning rate (rank 4, fixed)": [
        ("lr 2.5e-3", {"lr": 2.5e-3}, {}),
        ("lr 1e-2 (the previous default)", {"lr": 1e-2}, {}),
    ],
    "rank, at the rule's rate lr·√(L/(k·r))": [
        ("r 8, lr 3.5e-3", {"rank": 8, "lr": 3.5e-3}, {}),
        ("r 16, lr 2.5e-3", {"rank": 16, "lr": 2.5e-3}, {}),
    ],
    "layers per round k, at the rule's rate": [
        ("k 30, lr 2.85e-3", {"k": 30, "lr": 2.85e-3}, {}),
    ],
    "κ (steps per round)": [
        ("κ 40", {"kappa": 40}, {}),
    ],
    "booster start": [
        ("gradient (top r of the first gradient)", {"init": "gradient"}, {}),
        ("gradient, r of the top 2r at random", {"init": "gradient", "init_pool": 2}, {}),
        # Aimed, a step moves the loss about σ₁√in/‖G‖ times further than a random A's
        # does (an order of magnitude here): the aimed start wants a much lower rate.
        ("gradient, lr 1.5e-3", {"init": "gradient", "lr": 1.5e-3}, {}),
        ("gradient, lr 5e-4", {"init": "gradient", "lr": 5e-4}, {}),
        ("offset (A and B random, start subtracted)", {"init": "offset"}, {}),
        ("offset, lr 2.5e-3", {"init": "offset", "lr": 2.5e-3}, {}),
    ],
    "B's learning rate (LoRA+)": [
        ("B ×4", {"lr_ratio_b": 4.0}, {}),
        ("B ×4, gradient start, lr 2.5e-3", {"lr_ratio_b": 4.0, "init": "gradient", "lr": 2.5e-3}, {}),
    ],
    "Adam state between rounds": [
        ("carried with the module's A", {"optimizer_state": "carry"}, {}),
    ],
    "schedule and clipping": [
        ("constant LR", {}, {"train": {"schedule": "constant"}}),
        ("constant LR, 3.5e-3", {"lr": 3.5e-3}, {"train": {"schedule": "constant"}}),
        ("no gradient clipping", {}, {"train": {"max_grad_norm": 0}}),
    ],
}


def jobs(setup: Setup, seeds: list[int]) -> list[tuple[Method, Setup]]:
    out = []
    for seed in seeds:
        out.append((REFERENCE, replace(setup, seed=seed)))
        for variants in GROUPS.values():
            for label, method, extra in variants:
                out.append((replace(REFERENCE, name=label, **method), replace(setup, seed=seed, extra=extra)))
    return out


def report(rows: list[dict]) -> str:
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(r["method"]["name"], []).append(r)
    reference = by_name[REFERENCE.name]
    ref_loss = sum(r["final_eval_loss"] for r in reference) / len(reference)
    columns = [
        ("variant", ":--", lambda g: g[0]["method"]["name"]),
        ("held-out loss", "--:", lambda g: mean_spread([r["final_eval_loss"] for r in g])),
        ("vs reference", "--:", lambda g: f"{sum(r['final_eval_loss'] for r in g) / len(g) - ref_loss:+.3f}"),
        ("clipped steps", "--:", lambda g: _clipped(g[0])),
        ("first / last booster norm", "--:", lambda g: _norms(g[0])),
        ("step CPU s", "--:", lambda g: sum(r["step_cpu_s"] for r in g) / len(g)),
        ("peak MB", "--:", lambda g: f"{sum(r['peak_bytes'] for r in g) / len(g) / MB:.0f}"),
    ]
    sections = [f"#### reference: r = 4, k ≈ L/3, κ = 20, lr 5e-3\n\n{table([reference], columns)}"]
    for group, variants in GROUPS.items():
        mine = [by_name[label] for label, _, _ in variants if label in by_name]
        sections.append(f"#### {group}\n\n{table(mine, columns)}")
    return "\n".join(sections)


def _clipped(row: dict) -> str:
    # rows from before the harness recorded clipping and per-round norms show a dash
    return f"{100 * row['clipped_share']:.0f} %" if "clipped_share" in row else "–"


def _norms(row: dict) -> str:
    rounds = row.get("rounds")
    return f"{rounds[0]['booster_norm']:.1f} / {rounds[-1]['booster_norm']:.1f}" if rounds else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (default 0: a screen)")
    args = ap.parse_args()
    setup = setup_from_args(args, data="sample:unicode-names", steps=100, eval_every=20, answer_items=0)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = "ablations"
    chosen = jobs(setup, seeds)
    if args.quick:
        setup, out = replace(setup, steps=4, eval_every=2, eval_examples=4), "ablations_quick"
        chosen = jobs(setup, seeds[:1])[:2]
    rows = run_all(out, chosen)
    text = (f"({setup.steps} steps on {setup.data}, batch {setup.batch}, seq {setup.seq_len}, model {setup.model}, "
            f"{rows[0]['device']}, seeds {args.seeds}; one lever changed at a time)\n\n" + report(rows))
    (RESULTS / f"{out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
