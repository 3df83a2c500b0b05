"""Is PEFT LoRA's step time its adapters' arithmetic or its wrapper? The same model and
batch with the same rank-8 adapters on the same linears, once as PEFT's LoRA layers and
once as the engine's boosters (what the quality preset trains every round): forward +
backward time, the two interleaved in one process (alternating which goes first), so
drifts of the machine fall on both. Both copies hold the same nonzero A and B, so they
compute the same function, as a few steps into training.

    python -m benchmarks.adapter_overhead [--model default] [--data FILE] [--seq-len 128] [--repeats 15]

Writes results/adapter_overhead.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics

from benchmarks.harness import RESULTS, Method, data_name, data_path, trainable
from benchmarks.saved_tensors import step_seconds

PEFT, BOOSTERS = "PEFT LoRA r=8", "boosters r=8 on every layer"


def twin_models(model, prepared, seed: int = 0) -> dict:
    """{PEFT: the model with PEFT's LoRA, BOOSTERS: a copy with boosters}, same weights and
    same adapter factors."""
    import torch

    from xgblora_engine.boosting.booster import attach_boosters
    from xgblora_engine.models.targets import find_targets

    model.requires_grad_(False)
    boosted = copy.deepcopy(model)
    boosters = attach_boosters(boosted, find_targets(boosted, list(prepared.targets_by_layer)), 8, 2.0, 0.0, seed, 1)
    boosted.train()
    trainable(model, prepared, Method("lora-r8", "lora", rank=8))  # PEFT's layers, as the comparison injects them
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in boosters.items():
            b.B.copy_(torch.randn(b.B.shape, generator=generator) * 1e-3)  # both start B at zero
            lora = model.get_submodule(name)
            lora.lora_A["default"].weight.copy_(b.A)
            lora.lora_B["default"].weight.copy_(b.B)
    return {PEFT: model, BOOSTERS: boosted}


def main() -> None:
    import torch

    from xgblora_engine.config import RunConfig
    from xgblora_engine.data.dataset import BatchStream
    from xgblora_engine.session import prepare

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="benchmarks/data/iso-codes.jsonl")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    cfg = RunConfig()
    cfg.model.name, cfg.data.path, cfg.data.seq_len = args.model, data_path(args.data), args.seq_len
    prepared = prepare(cfg, lambda event: None)
    batch = BatchStream(prepared.data.train, 4, 0, prepared.pad_id).next_batch()
    models = twin_models(prepared.loaded.model, prepared)
    times = {name: [] for name in models}
    for i in range(args.repeats + 1):  # the first of each is a warm-up, dropped
        for name in (PEFT, BOOSTERS) if i % 2 else (BOOSTERS, PEFT):
            times[name] += step_seconds(models[name], batch, 1)
    base = statistics.median(times[PEFT][1:])
    lines = [f"#### {data_name(args.data)}: batch 4 × {args.seq_len} ({batch['input_ids'].numel()} tokens), "
             f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats", "",
             "| adapters | forward + backward s (median) | × PEFT LoRA r=8 |", "|:--|--:|--:|"]
    for name, seconds in times.items():
        median = statistics.median(seconds[1:])
        lines.append(f"| {name} | {median:.3f} | {median / base:.2f} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "adapter_overhead.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
