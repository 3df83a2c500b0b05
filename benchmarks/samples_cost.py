"""What the sample answers cost a run: the seconds spent answering the held-out prompts
at every evaluation, as a share of the seconds spent in optimizer steps, measured inside
one run (both figures come from the same events), at the default evaluation interval
and number of prompts.

    python -m benchmarks.samples_cost [--model default] [--steps 100]

Writes results/samples_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from benchmarks.harness import RESULTS
from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig
from xgblora_engine.session import run_training

DATASETS = {"sample:unicode-names": 128, "sample:python-topics": 192}  # data -> seq_len (as the comparison)


def measure(model: str, data: str, seq_len: int, steps: int) -> dict:
    cfg = RunConfig()
    cfg.model.name, cfg.data.path, cfg.data.seq_len, cfg.train.max_steps = model, data, seq_len, steps
    events = []
    with tempfile.TemporaryDirectory() as out:
        run_training(cfg, os.path.join(out, "run"), events.append)
    steps_s = sum(e.seconds for e in events if isinstance(e, P.StepMetrics))
    samples = [e for e in events if isinstance(e, P.SampleAnswers)]
    answer_s = sum(e.seconds for e in samples)
    return {"data": data, "steps": steps, "eval_every": cfg.train.eval_every, "samples": cfg.train.samples,
            "sample_tokens": cfg.train.sample_tokens, "evaluations": [e.step for e in samples],
            "training_seconds": steps_s, "answer_seconds": answer_s, "share": answer_s / steps_s,
            "per_evaluation_s": answer_s / max(1, len(samples)), "threads": int(os.environ.get("OMP_NUM_THREADS", 0)),
            "final_token_f1": samples[-1].token_f1 if samples else None}


def interval_share(row: dict) -> float:
    """One evaluation's answers over the training steps between two evaluations: the share
    a run pays once it is longer than a few intervals (the base model's answers at step 0
    are paid once)."""
    step_s = row["training_seconds"] / row["steps"]
    return row["per_evaluation_s"] / (row["eval_every"] * step_s)


def report(rows: list[dict]) -> str:
    lines = ["| data | steps | evaluations | answers each | training s | answering s | share of this run "
             "| share of each later interval |",
             "|:--|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['steps']} | {len(r['evaluations'])} (every {r['eval_every']}) | "
                     f"{r['samples']} × ≤{r['sample_tokens']} tokens | {r['training_seconds']:.1f} | "
                     f"{r['answer_seconds']:.1f} | {100 * r['share']:.1f} % | {100 * interval_share(r):.1f} % |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    rows = [measure(args.model, data, seq_len, args.steps) for data, seq_len in DATASETS.items()]
    (RESULTS / "samples_cost.json").write_text(json.dumps(rows, indent=1))
    (RESULTS / "samples_cost.md").write_text(report(rows))
    print(report(rows))


if __name__ == "__main__":
    main()
