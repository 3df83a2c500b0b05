"""A gradient probe for choosing layers (``boost.sampling: gradient``).

Before a round, one forward and backward pass on the round's first batch measures how
much each layer's targeted linears could lower the loss right now: the Frobenius norm of
their weight gradient ``G = Σ δ·xᵀ``. The round then draws k layers with probability
proportional to that norm, so layers the loss is steep in are boosted more often, and
every layer keeps a chance (GBDT's greedy split choice, softened to keep diversity).

No weight gradient is kept: each linear's ``G`` is formed in its backward hook, reduced
to one number and dropped, so memory is one module's ``G`` on top of the activations of
a full backward pass (what a round whose lowest layer is 0 keeps anyway). The cost is
about one training step per round.
"""

from __future__ import annotations

import torch
from torch import nn

from xgblora_engine.boosting.loss import count_targets, input_device, summed_loss


def layer_gradient_norms(model: nn.Module, batch: dict[str, torch.Tensor],
                         targets_by_layer: dict[int, list[str]], reduce=None) -> list[float]:
    """‖G_l‖ per layer: the Frobenius norm of the loss gradient over all of layer l's
    targeted weights, with the loss normalised per target token. ``reduce`` sums the
    squared norms across data-parallel ranks, so every rank draws the same layers."""
    n_layers = len(targets_by_layer)
    # On the batch's device, summed there by every hook: one host sync per probe, not one
    # per linear, and a tensor NCCL can all-reduce.
    squares = torch.zeros(n_layers, dtype=torch.float64, device=input_device(model))
    layer_of = {name: layer for layer, names in targets_by_layer.items() for name in names}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(_measure(squares, layer))
               for name, layer in layer_of.items()]
    # The base weights do not train, so nothing below the head would need a gradient:
    # let the embeddings' output require one and the backward runs through every layer.
    handles.append(model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: output.detach().requires_grad_(True)))
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad():
            (summed_loss(model, batch) / max(1, count_targets(batch["labels"]))).backward()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if reduce is not None:
        reduce([squares])
    return squares.sqrt().cpu().tolist()


def _measure(squares: torch.Tensor, layer: int):
    def on_forward(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if not output.requires_grad:
            return
        x = args[0].detach()

        def on_grad(delta: torch.Tensor) -> None:
            xs = x.reshape(-1, x.shape[-1]).float()
            ds = delta.reshape(-1, delta.shape[-1]).float()
            squares[layer] += (ds.t() @ xs).square().sum().to(squares.device, torch.float64)

        output.register_hook(on_grad)
    return on_forward
