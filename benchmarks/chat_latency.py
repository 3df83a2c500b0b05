"""How long a chat user waits: seconds to the first token of an answer, and tokens per
second after it, on the embedded model (greedy, as the Try-it panel and `xgblora chat`
answer), for a fresh conversation and for one with three earlier turns.

    python -m benchmarks.chat_latency [--model default] [--repeats 5]

Writes results/chat_latency.{json,md}. The model is loaded once before timing (the
panel keeps it loaded between messages).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from benchmarks.harness import RESULTS
from xgblora_engine.export.chat import Sampling, generate, get_model

QUESTION = "What is the Unicode name of the character 'é'?"
HISTORY = [{"role": "user", "content": "What does the Python function len() return?"},
           {"role": "assistant", "content": "The number of items in a container."},
           {"role": "user", "content": "And sorted()?"},
           {"role": "assistant", "content": "A new sorted list from the items of an iterable."}]


def measure(model: str, turns: list[dict], repeats: int) -> dict:
    replies = [generate(model, turns, Sampling(max_new_tokens=64)) for _ in range(repeats)]
    first = [r.first_token_s for r in replies]
    rates = [(r.tokens - 1) / max(r.seconds - r.first_token_s, 1e-9) for r in replies if r.tokens > 1]
    return {"turns": len(turns), "first_token_s_median": statistics.median(first), "first_token_s_max": max(first),
            "tokens_per_s_median": statistics.median(rates) if rates else None, "answer": replies[0].text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    get_model(args.model)  # loaded once, as the panel keeps it
    rows = [measure(args.model, [{"role": "user", "content": QUESTION}], args.repeats),
            measure(args.model, HISTORY + [{"role": "user", "content": QUESTION}], args.repeats)]
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count()
    result = {"model": args.model, "device": "cpu", "threads": threads, "repeats": args.repeats, "rows": rows}
    (RESULTS / "chat_latency.json").write_text(json.dumps(result, indent=1))
    lines = [f"(model {args.model}, CPU, {threads} threads, greedy, {args.repeats} answers each, median and worst)", "",
             "| conversation | first token s (median) | first token s (worst) | tokens/s after it |", "|:--|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['turns']} turn{'s' if r['turns'] > 1 else ''} | {r['first_token_s_median']:.3f} | "
                     f"{r['first_token_s_max']:.3f} | {r['tokens_per_s_median']:.1f} |")
    (RESULTS / "chat_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
