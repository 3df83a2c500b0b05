"""How close the preflight's analytic estimate is to the real peak of training.

Each grid point runs in a fresh process (RSS never shrinks inside one): load the model,
take the analytic estimate, then train real optimizer steps with the worst layer draw
(boosters on the lowest k layers, so backward reaches every layer) on the longest batch
while sampling RSS. Reports estimate / measured for each point; the target is ±20 %.

    python benchmarks/preflight_accuracy.py [--model default] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GRID = [  # (batch, seq, k, rank, quantize)
    (1, 64, 10, 1, "none"), (2, 128, 10, 1, "none"), (4, 128, 10, 1, "none"), (8, 128, 10, 1, "none"),
    (4, 256, 10, 1, "none"), (4, 128, 20, 1, "none"), (4, 128, 30, 1, "none"), (4, 128, 10, 16, "none"),
    (4, 128, 30, 8, "none"),
]


def measure(model: str, batch: int, seq: int, k: int, rank: int, quantize: str) -> dict:
    from xgblora_engine import memory
    from xgblora_engine.config import RunConfig
    from xgblora_engine.models.shape import shape_of
    from xgblora_engine.session import _longest_batch, measure_trial, prepare

    cfg = RunConfig()
    cfg.model.name, cfg.model.quantize = model, quantize
    cfg.train.batch_size, cfg.data.seq_len, cfg.boost.layers_per_round, cfg.boost.rank = batch, seq, k, rank
    cfg.data.train_on = "all"  # every position labelled: the estimate's worst case for the logits
    prepared = prepare(cfg, lambda e: None)
    info = prepared.loaded.info
    longest = _longest_batch(prepared, cfg)
    labelled = int((longest["labels"][:, 1:] != -100).sum())
    est = memory.estimate(shape_of(prepared.loaded.model), cfg, "cpu", info.dtype, labelled,
                          int(longest["input_ids"].numel()))
    analytic = est.total - est.parts.get("merge originals", 0)  # originals accumulate later in a run
    measured = measure_trial(prepared, cfg, longest, steps=3)
    return {"batch": batch, "seq": seq, "k": k, "rank": rank, "quantize": quantize, "tokens": int(longest["input_ids"].numel()),
            "analytic": analytic, "measured": measured, "ratio": analytic / measured, "parts": est.parts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--quick", action="store_true", help="two small points only")
    ap.add_argument("--point", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        print(json.dumps(measure(args.model, *json.loads(args.point))))
        return
    rows = []
    for point in GRID[:2] if args.quick else GRID:
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--point", json.dumps(point)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"batch {r['batch']} seq {r['seq']} k {r['k']} r {r['rank']}: analytic {r['analytic'] / 2**30:.2f} GB, "
              f"measured {r['measured'] / 2**30:.2f} GB, ratio {r['ratio']:.2f}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "preflight_accuracy.json").write_text(json.dumps({"model": args.model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
