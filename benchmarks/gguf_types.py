"""Each GGUF type, exported from one run: file size, and how far its held-out loss drifts
from the fp32 merged model it was written from.

    python -m benchmarks.gguf_types [--run RUN_DIR] [--types f16,q8_0,q5_1,q5_0,q4_1,q4_0]

Without ``--run`` a 40-step run on the embedded model and the bundled data is trained
first. Every file is opened in a second tool, transformers' GGUF loader (which dequantizes
the tensors), and scored on the run's own held-out examples; where llama-cpp-python (the
``gguf-runtime`` extra) is installed, also in llama.cpp itself: the same held-out loss
from its logits, and its speed generating greedily. Writes
benchmarks/results/gguf_types.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TYPES = ("f16", "q8_0", "q6_K", "q5_K_M", "q5_1", "q5_0", "q4_K_M", "q4_1", "q4_0")
NEW_TOKENS = 64  # generated greedily to time llama.cpp


def train_short_run(folder: Path) -> Path:
    from xgblora_engine.config import RunConfig
    from xgblora_engine.session import run_training

    cfg = RunConfig()
    cfg.train.max_steps = 40
    return run_training(cfg, str(folder / "run"), lambda event: None).path


def held_out_loss(model, prepared, cfg) -> float:
    from xgblora_engine.boosting.loss import mean_loss
    from xgblora_engine.data.dataset import eval_batches

    loss, _ = mean_loss(model, eval_batches(prepared.data.eval, cfg.train.batch_size, prepared.pad_id), model.device)
    return loss


def llama_cpp_scores(path: Path, batches: list[dict]) -> dict:
    """Held-out loss from llama.cpp's own logits (the labelled positions, as in training) and
    its greedy decoding speed, on all of this machine's cores."""
    import os

    import llama_cpp
    import numpy as np

    rows = [(b["input_ids"][i][b["attention_mask"][i].bool()].tolist(), b["labels"][i][b["attention_mask"][i].bool()].tolist())
            for b in batches for i in range(len(b["input_ids"]))]
    n_ctx = max(len(ids) for ids, _ in rows) + NEW_TOKENS + 8
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True,
                          n_threads=os.cpu_count() or 1, verbose=False)
    try:
        total, count = 0.0, 0
        for ids, labels in rows:
            llm.reset()
            llm.eval(ids)
            logits = np.array(llm.scores[:len(ids) - 1], dtype=np.float64)
            targets = np.array(labels[1:])
            keep = targets != -100
            logits, targets = logits[keep], targets[keep]
            top = logits.max(axis=1, keepdims=True)
            log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
            total += float((log_z - logits[np.arange(len(targets)), targets]).sum())
            count += int(keep.sum())
        llm.reset()
        llm.eval(rows[0][0])
        started = time.perf_counter()
        for _ in range(NEW_TOKENS):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        tokens_per_s = NEW_TOKENS / (time.perf_counter() - started)
    finally:
        llm.close()
    return {"llama_cpp_held_out_loss": total / count, "llama_cpp_tokens_per_s": round(tokens_per_s, 1)}


def measure(run: Path, types: list[str], scratch: Path, in_llama_cpp: bool = True) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from xgblora_engine.data.dataset import eval_batches
    from xgblora_engine.export import export_run, load_merged
    from xgblora_engine.export import gguf as G
    from xgblora_engine.export.merged import open_run
    from xgblora_engine.session import prepare

    cfg = open_run(run).cfg
    prepared = prepare(cfg, lambda event: None)  # the run's own held-out split, tokenized as in training
    model, _, _ = load_merged(run)
    reference = held_out_loss(model, prepared, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    rows = []
    for quant in types:
        started = time.perf_counter()
        [result] = export_run(run, None, ["gguf"], quant=quant, into=scratch, verify=False)
        seconds = time.perf_counter() - started
        path = next(Path(result.path).glob("*.gguf"))
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
        loss = held_out_loss(loaded.eval(), prepared, cfg)
        rows.append({"type": quant, "bytes": path.stat().st_size, "bits_per_weight": 8 * path.stat().st_size / n_params,
                     "held_out_loss": loss, "drift": loss - reference, "export_s": round(seconds, 1)})
        if in_llama_cpp and G.runtime_available():
            rows[-1].update(llama_cpp_scores(path, list(eval_batches(prepared.data.eval, cfg.train.batch_size,
                                                                      prepared.pad_id))))
        print(json.dumps(rows[-1]), flush=True)
        del loaded
        path.unlink()
    return {"run": str(run), "model": cfg.model.name, "n_params": n_params, "eval_examples": len(prepared.data.eval),
            "fp32_merged_held_out_loss": reference, "rows": rows, "threads": torch.get_num_threads(),
            "llama_cpp": in_llama_cpp and G.runtime_available()}


def table(result: dict) -> str:
    lines = [f"Held-out loss of the fp32 merged model: {result['fp32_merged_held_out_loss']:.4f} "
             f"({result['eval_examples']} examples, {result['n_params'] / 1e6:.0f}M parameters)", "",
             "| type | file MB | bits / weight | held-out loss (transformers) | drift from fp32 "
             "| held-out loss (llama.cpp) | llama.cpp tokens/s | export s |",
             "|:--|--:|--:|--:|--:|--:|--:|--:|"]
    for r in result["rows"]:
        in_llama = (f"{r['llama_cpp_held_out_loss']:.4f} | {r['llama_cpp_tokens_per_s']:.0f}"
                    if "llama_cpp_held_out_loss" in r else "– | –")
        lines.append(f"| {r['type']} | {r['bytes'] / 1e6:.0f} | {r['bits_per_weight']:.2f} | {r['held_out_loss']:.4f} "
                     f"| {r['drift']:+.4f} | {in_llama} | {r['export_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run folder (default: train 40 steps on the embedded model)")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--no-llama-cpp", action="store_true",
                        help="do not run the files in llama.cpp (the K-types still need it installed to be made)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gguf-types-") as tmp:
        run = args.run or train_short_run(Path(tmp))
        result = measure(run, args.types.split(","), Path(tmp) / "exports", not args.no_llama_cpp)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gguf_types.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "gguf_types.md").write_text(table(result), encoding="utf-8")
    print(table(result))


if __name__ == "__main__":
    main()
