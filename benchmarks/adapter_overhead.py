"""Step time in one process, on one batch: PEFT's LoRA r=8 against the same rank-8 adapters
as the engine's boosters on the same linears (what the quality preset trains every round:
is PEFT's wrapper the cost?), and against the boosters of the defaults' first three draws
(half the layers, top-biased: the time target measured without a second process) and of
the fast preset's (a sixth, top-biased). Forward
+ backward, and the whole step (clipping, AdamW, freeing the gradients); the models are
interleaved in each repeat, in alternating order, so drifts of the machine fall on all.
PEFT's copy and the every-layer copy hold the same nonzero A and B, so they compute the
same function, as a few steps into training. Merges (a few percent of a round) are not
in it.

    python -m benchmarks.adapter_overhead [--model default] [--data FILE] [--seq-len 128] [--repeats 15]
                                          [--device auto|cpu|cuda] [--dtype auto|fp32|bf16]

On a GPU every timer waits for the queued kernels first (``settle``).

Writes results/adapter_overhead.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics

from benchmarks.harness import RESULTS, Method, data_name, data_path, trainable
from benchmarks.saved_tensors import settle, step_seconds

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


def defaults_model(model, prepared, round_index: int, share: float = 1 / 2):
    """A copy of the base with boosters on the layers the defaults draw in ``round_index``
    (half, top-biased; ``share`` 1/6 for the fast preset's), B nonzero as a few steps in;
    and those layers."""
    import torch

    from xgblora_engine.boosting.booster import attach_boosters
    from xgblora_engine.boosting.sampling import sample_layers
    from xgblora_engine.config import RunConfig
    from xgblora_engine.models.targets import find_targets

    n = len(prepared.targets_by_layer)
    drawn = sample_layers(n, round(n * share), 0, round_index, RunConfig().boost.sampling)
    boosted = copy.deepcopy(model).requires_grad_(False)
    boosters = attach_boosters(boosted, find_targets(boosted, drawn), 8, 2.0, 0.0, 0, round_index)
    with torch.no_grad():
        for b in boosters.values():
            b.B.normal_(0, 1e-3)
    return boosted.train(), drawn


def whole_step_seconds(model, batch, optimizer) -> float:
    """One training step as the comparison's loops take it: forward, backward, clipping,
    AdamW's step and freeing the gradients."""
    import time

    import torch

    from xgblora_engine.boosting.loss import summed_loss

    params = [p for group in optimizer.param_groups for p in group["params"]]
    settle(model)
    started = time.perf_counter()
    summed_loss(model, batch).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    settle(model)
    return time.perf_counter() - started


def main() -> None:
    import torch

    from xgblora_engine.boosting.loss import batch_to, input_device
    from xgblora_engine.config import RunConfig
    from xgblora_engine.data.dataset import BatchStream
    from xgblora_engine.session import prepare

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="benchmarks/data/iso-codes.jsonl")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]: where a user's GPU would train")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU that has it), fp32, bf16 or fp16")
    args = ap.parse_args()
    cfg = RunConfig()
    cfg.model.name, cfg.data.path, cfg.data.seq_len = args.model, data_path(args.data), args.seq_len
    cfg.model.device, cfg.model.dtype = args.device, args.dtype
    prepared = prepare(cfg, lambda event: None)
    batch = batch_to(BatchStream(prepared.data.train, 4, 0, prepared.pad_id).next_batch(),
                     input_device(prepared.loaded.model))
    models = {}
    for who, share in (("the defaults'", 1 / 2), ("the fast preset's", 1 / 6)):
        for round_index in (1, 2, 3):
            boosted, drawn = defaults_model(prepared.loaded.model, prepared, round_index, share)
            models[f"{who} round {round_index} draw ({len(drawn)} layers, lowest {drawn[0]})"] = boosted
    models = {**twin_models(prepared.loaded.model, prepared), **models}
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-6)
                  for name, m in models.items()}
    passes, steps = {name: [] for name in models}, {name: [] for name in models}
    for i in range(args.repeats + 1):  # the first of each is a warm-up, dropped
        for name in list(models) if i % 2 else reversed(models):
            passes[name] += step_seconds(models[name], batch, 1)
            optimizers[name].zero_grad(set_to_none=True)
            steps[name].append(whole_step_seconds(models[name], batch, optimizers[name]))
    where = batch["input_ids"].device
    lines = [f"#### {data_name(args.data)}: batch 4 × {args.seq_len} ({batch['input_ids'].numel()} tokens), "
             f"{torch.cuda.get_device_name(where) if where.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}, "
             f"{args.repeats} interleaved repeats", "",
             "| adapters | forward + backward s (median) | × PEFT LoRA r=8 | the whole step s (median) | × PEFT LoRA r=8 |",
             "|:--|--:|--:|--:|--:|"]
    base_pass, base_step = statistics.median(passes[PEFT][1:]), statistics.median(steps[PEFT][1:])
    for name in models:
        one_pass, step = statistics.median(passes[name][1:]), statistics.median(steps[name][1:])
        lines.append(f"| {name} | {one_pass:.3f} | {one_pass / base_pass:.2f} | {step:.3f} | {step / base_step:.2f} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "adapter_overhead.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
