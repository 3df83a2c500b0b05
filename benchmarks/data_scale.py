"""Preparing data of any size in bounded memory: peak RSS and time of `prepare_data` on
JSON Lines files of 10 thousand to a million rows, against the way it was done before
(every row read into a list, every example kept as Python lists), side by side.

Each measurement runs in a fresh process: the tokenizer is loaded, the RSS is read
(the baseline), and the peak above it is sampled every 20 ms while the data is prepared.

    python -m benchmarks.data_scale [--rows 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MB = 2**20
WHOLE_UP_TO = 100_000  # the former way is measured up to here: beyond, it needs gigabytes
WORDS = ("the", "model", "learns", "a", "booster", "per", "round", "merged", "into", "weights", "layer",
         "rank", "small", "data", "answer", "question", "python", "list", "value", "returns")


def write_rows(path: Path, n: int) -> None:
    """Alpaca rows of 5–40 words of instruction and 3–30 of answer (seeded)."""
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            instruction = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
            output = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
            f.write(json.dumps({"instruction": f"{i}: {instruction}?", "output": output}) + "\n")


def measure(mode: str, path: str) -> dict:
    """In this process: prepare ``path`` the ``mode`` way, with the peak RSS above the loaded tokenizer."""
    import psutil

    from xgblora_engine.config import DataConfig, ModelConfig
    from xgblora_engine.models.loading import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig())
    me = psutil.Process()
    base, peak, done = me.memory_info().rss, [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], me.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    n_train, tokens = (_streamed if mode == "streamed" else _whole)(DataConfig(path=path, seq_len=256), tokenizer)
    seconds = time.perf_counter() - started
    done.set()
    peak[0] = max(peak[0], me.memory_info().rss)
    return {"mode": mode, "n_train": n_train, "tokens": tokens, "seconds": seconds,
            "peak_above_bytes": peak[0] - base, "base_bytes": base}


def _streamed(cfg, tokenizer) -> tuple[int, int]:
    from xgblora_engine.data.dataset import prepare_data

    data = prepare_data(cfg, tokenizer, seed=0)
    return len(data.train), sum(data.train.lengths())


def _whole(cfg, tokenizer) -> tuple[int, int]:
    """The former way: all rows in a list, then every example as lists of Python ints."""
    from xgblora_engine.data.formats import detect_format, to_conversation
    from xgblora_engine.data.readers import read_rows
    from xgblora_engine.data.tokenize import encode

    rows = read_rows(cfg.path)
    fmt = detect_format(rows)
    examples = [encode(tokenizer, to_conversation(r, fmt, i), cfg.seq_len) for i, r in enumerate(rows, 1)]
    return len(examples), sum(e.n_tokens for e in examples)


def run(mode: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.data_scale", "--one", mode, str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: list[dict]) -> str:
    lines = ["| rows | way | peak RSS above the tokenizer, MB | bytes per token | s | rows/s | × the former way's peak |",
             "|--:|:--|--:|--:|--:|--:|--:|"]
    whole = {r["rows"]: r for r in rows if r["mode"] == "whole"}
    for r in rows:
        ratio = (f"{r['peak_above_bytes'] / whole[r['rows']]['peak_above_bytes']:.2f}"
                 if r["mode"] == "streamed" and r["rows"] in whole else "–")
        lines.append(f"| {r['rows']:,} | {'streamed, compact' if r['mode'] == 'streamed' else 'whole, lists'} | "
                     f"{r['peak_above_bytes'] / MB:.0f} | {r['peak_above_bytes'] / r['tokens']:.1f} | "
                     f"{r['seconds']:.0f} | {r['rows'] / r['seconds']:.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="the largest file (default a million rows)")
    ap.add_argument("--quick", action="store_true", help="2 000 rows: checks the script runs")
    ap.add_argument("--one", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return
    sizes = [2_000] if args.quick else sorted({10_000, WHOLE_UP_TO, args.rows})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"rows-{n}.jsonl"
            write_rows(path, n)
            for mode in ("whole", "streamed") if n <= WHOLE_UP_TO else ("streamed",):
                rows.append(dict(run(mode, path), rows=n))
                print(rows[-1], flush=True)
    stem = "data_scale_quick" if args.quick else "data_scale"
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    text = report(rows)
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
