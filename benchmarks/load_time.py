"""How long loading a .gguf base takes, read from the file and from its dequantized copy
(models/gguf_cache.py), side by side in one process: the tokenizer and the model, as every
run, export and chat answer loads them.

    python -m benchmarks.load_time [--model default] [--repeats 3]

Each repeat starts from an empty cache (a temporary folder), loads once from the .gguf (which
keeps the copy) and once from the copy. Writes results/load_time.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import RESULTS
from xgblora_engine.config import ModelConfig
from xgblora_engine.models import gguf_cache
from xgblora_engine.models.loading import load_model, load_tokenizer


def timed_load(cfg: ModelConfig) -> dict:
    start = time.perf_counter()
    tokenizer = load_tokenizer(cfg)
    middle = time.perf_counter()
    load_model(cfg, tokenizer=tokenizer)
    end = time.perf_counter()
    return {"tokenizer_s": middle - start, "model_s": end - middle, "total_s": end - start}


def measure(cfg: ModelConfig, repeats: int) -> dict:
    rows = {"from the .gguf": [], "from the kept copy": []}
    user_cache = gguf_cache.cache_root
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            gguf_cache.cache_root = lambda tmp=tmp: Path(tmp)  # an empty cache for each repeat
            try:
                rows["from the .gguf"].append(timed_load(cfg))
                rows["from the kept copy"].append(timed_load(cfg))
            finally:
                gguf_cache.cache_root = user_cache
    return {way: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for way, runs in rows.items()}


def table(result: dict) -> str:
    gguf = result["ways"]["from the .gguf"]["total_s"]
    lines = ["| loaded | tokenizer s | model s | total s | × from the .gguf |", "|:--|--:|--:|--:|--:|"]
    for way, t in result["ways"].items():
        lines.append(f"| {way} | {t['tokenizer_s']:.2f} | {t['model_s']:.2f} | {t['total_s']:.2f} | "
                     f"{t['total_s'] / gguf:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = ModelConfig(name=args.model, device="cpu", dtype="fp32")
    result = {"model": args.model, "repeats": args.repeats, "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or
              os.cpu_count(), "ways": measure(cfg, args.repeats)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load_time.json").write_text(json.dumps(result, indent=2) + "\n")
    md = f"#### Loading {args.model} (medians of {args.repeats}, cpu fp32)\n\n{table(result)}\n"
    (RESULTS / "load_time.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
