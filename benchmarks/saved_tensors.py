"""What one forward keeps for backward: autograd's saved tensors, in MB, by where they were
saved, for XGBLoRA at k = 10, 20 and 30 and for PEFT LoRA r=8 on the same batch.

Parameters and buffers are left out (they are the model, saved by reference), and a storage
saved twice counts once. "adapter paths" are the boosters' or LoRA's own matmuls; the rest is
what the base model keeps so that backward can pass through it, which every method needs
down to its lowest trained layer.

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


def report(rows: list[tuple[str, dict[str, float]]], tokens: int, data: str) -> str:
    places = sorted({p for _, by in rows for p in by}, key=lambda p: -max(by.get(p, 0) for _, by in rows))
    lines = [f"#### {data}: one batch of {tokens} tokens", "",
             "| method | saved MB | " + " | ".join(places) + " |", "|:--|--:|" + "--:|" * len(places)]
    for name, by in rows:
        lines.append(f"| {name} | {sum(by.values()):.0f} | " + " | ".join(f"{by.get(p, 0):.0f}" for p in places) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from xgblora_engine.boosting.booster import BoosterLinear, attach_boosters, detach_boosters
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
    trainable(model, prepared, Method("lora-r8", "lora", rank=8))  # as the comparison injects it
    lora_modules = {m for name, m in model.named_modules() if "lora_" in name}
    rows.append(("LoRA r=8", saved_by_place(model, batch, lambda m: m in lora_modules)))
    text = report(rows, batch["input_ids"].numel(), data_name(args.data))
    (RESULTS / "saved_tensors.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
