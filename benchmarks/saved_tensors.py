"""What one forward keeps for backward: autograd's saved tensors, in MB, by where they were
saved, for XGBLoRA at k = 10, 20 and 30 and for PEFT LoRA r=8 on the same batch.

Parameters and buffers are left out (they are the model, saved by reference), and a storage
saved twice counts once. "adapter paths" are the boosters' or LoRA's own matmuls; the rest is
what the base model keeps so that backward can pass through it, which every method needs
down to its lowest trained layer.

A second table asks what recomputing layers in backward would save at the defaults (a
top-biased draw of half the layers): the pass-through layers only (those between the
lowest drawn layer and the top that train nothing, which backward only passes through),
or every layer from the lowest drawn one (gradient checkpointing where backward goes),
with the forward + backward time of each against none recomputed, interleaved repeats.

    python -m benchmarks.saved_tensors [--model default] [--data FILE] [--seq-len 128]

Writes results/saved_tensors.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib

from benchmarks.harness import RESULTS, Method, data_name, data_path, trainable
from benchmarks.suite import MB


@contextlib.contextmanager
def innermost_module(model):
    """Yields a list whose last item is the module whose forward is running."""
    stack, hooks = [], []

    def enter(module, *args) -> None:
        stack.append(module)

    def leave(module, *args) -> None:  # returns None: a forward hook's result would replace the output
        stack.pop()

    for module in model.modules():
        hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield stack
    finally:
        for hook in hooks:
            hook.remove()


def saved_by_place(model, batch, is_adapter) -> dict[str, float]:
    """MB of tensors autograd saves in one forward of ``batch``: adapter paths, the base
    model by module type, and the loss head."""
    import torch

    from xgblora_engine.boosting.loss import summed_loss

    model_storages = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen, by_place = set(), collections.Counter()
    with innermost_module(model) as stack:
        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in model_storages and ptr not in seen:
                seen.add(ptr)
                place = "adapter paths" if stack and is_adapter(stack[-1]) else type(stack[-1]).__name__ if stack else "loss head"
                by_place[place] += t.untyped_storage().nbytes() / MB
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = summed_loss(model, batch)
    loss.backward()
    return dict(by_place)


@contextlib.contextmanager
def recomputed(model, indices: set[int]):
    """Decoder layers ``indices`` recompute their forward in backward (non-reentrant
    checkpointing, transformers' per-layer switch) instead of keeping what it saved."""
    import functools

    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i in indices
        layer._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
    try:
        yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = False


def settle(model) -> None:
    """Wait for the kernels queued on the model's GPU: CUDA runs asynchronously, so a timer
    read without this measures the launches, not the work. Nothing to wait for on a CPU."""
    import torch

    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(model, batch, repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` forward + backward passes."""
    import time

    from xgblora_engine.boosting.loss import summed_loss

    seconds = []
    for _ in range(repeats):
        settle(model)
        started = time.perf_counter()
        summed_loss(model, batch).backward()
        settle(model)
        seconds.append(time.perf_counter() - started)
    return seconds


def recompute_rows(model, batch, layers: list[int], n_layers: int, repeats: int = 5) -> list[tuple[str, float, float]]:
    """(arm, saved MB, median fwd+bwd seconds × none recomputed) for boosters on ``layers``."""
    import statistics

    from xgblora_engine.boosting.booster import BoosterLinear

    below = set(range(layers[0], n_layers))
    arms = {"none recomputed": set(), f"the {len(below) - len(layers)} pass-through layers recomputed":
            below - set(layers), f"every layer from {layers[0]} recomputed": below}
    saved, times = {}, {arm: [] for arm in arms}
    was_training = model.training
    model.train()  # as the engine trains: a layer recomputes only in training mode
    for arm, indices in arms.items():
        with recomputed(model, indices):
            saved[arm] = sum(saved_by_place(model, batch, lambda m: isinstance(m, BoosterLinear)).values())
    for _ in range(repeats):  # interleaved, so drifts of the machine fall on every arm alike
        for arm, indices in arms.items():
            with recomputed(model, indices):
                times[arm] += step_seconds(model, batch, 1)
    model.train(was_training)
    base = statistics.median(times["none recomputed"])
    return [(arm, saved[arm], statistics.median(times[arm]) / base) for arm in arms]


def report(rows: list[tuple[str, dict[str, float]]], tokens: int, data: str) -> str:
    places = sorted({p for _, by in rows for p in by}, key=lambda p: -max(by.get(p, 0) for _, by in rows))
    lines = [f"#### {data}: one batch of {tokens} tokens", "",
             "| method | saved MB | " + " | ".join(places) + " |", "|:--|--:|" + "--:|" * len(places)]
    for name, by in rows:
        lines.append(f"| {name} | {sum(by.values()):.0f} | " + " | ".join(f"{by.get(p, 0):.0f}" for p in places) + " |")
    return "\n".join(lines) + "\n"


def recompute_report(rows: list[tuple[str, float, float]], drawn: list[int], n_layers: int) -> str:
    lines = [f"#### Recomputing in backward: XGBLoRA r=8, k={len(drawn)} of {n_layers} drawn top-biased "
             f"(lowest layer {drawn[0]})", "", "| recomputed | saved MB | forward + backward time × none |",
             "|:--|--:|--:|"]
    lines += [f"| {arm} | {mb:.0f} | {ratio:.2f} |" for arm, mb, ratio in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    from xgblora_engine.boosting.booster import BoosterLinear, attach_boosters, detach_boosters
    from xgblora_engine.boosting.sampling import sample_layers
    from xgblora_engine.config import RunConfig
    from xgblora_engine.data.dataset import BatchStream
    from xgblora_engine.models.targets import find_targets
    from xgblora_engine.session import prepare

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="benchmarks/data/word-definitions.jsonl")
    ap.add_argument("--seq-len", type=int, default=128)
    args = ap.parse_args()
    cfg = RunConfig()
    cfg.model.name, cfg.data.path, cfg.data.seq_len = args.model, data_path(args.data), args.seq_len
    prepared = prepare(cfg, lambda event: None)
    model = prepared.loaded.model
    model.requires_grad_(False)
    batch = BatchStream(prepared.data.train, 4, 0, prepared.pad_id).next_batch()
    n = len(prepared.targets_by_layer)
    rows = []
    # k = 10: every third layer from layer 2, about where 10 uniform draws of 30 start
    for k, layers in ((n // 3, list(range(2, n, 3))), (2 * n // 3, [i for i in range(n) if i % 3 != 1]),
                      (n, list(range(n)))):
        boosters = attach_boosters(model, find_targets(model, layers), 8, 2.0, 0.0, 0, 1)
        rows.append((f"XGBLoRA r=8, k={k} (lowest layer {layers[0]})",
                     saved_by_place(model, batch, lambda m: isinstance(m, BoosterLinear))))
        detach_boosters(model, boosters)
    drawn = sample_layers(n, n // 2, 0, 1, "top-biased")  # the defaults' first round
    boosters = attach_boosters(model, find_targets(model, drawn), 8, 2.0, 0.0, 0, 1)
    recompute = recompute_rows(model, batch, drawn, n)
    detach_boosters(model, boosters)
    trainable(model, prepared, Method("lora-r8", "lora", rank=8))  # as the comparison injects it
    lora_modules = {m for name, m in model.named_modules() if "lora_" in name}
    rows.append(("LoRA r=8", saved_by_place(model, batch, lambda m: m in lora_modules)))
    text = report(rows, batch["input_ids"].numel(), data_name(args.data)) + "\n" + \
        recompute_report(recompute, drawn, n)
    (RESULTS / "saved_tensors.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
