"""Gradient boosting's line search (Friedman 2001): a round's booster is merged at the
multiple η of its update that lowers the loss most, instead of at η = 1.

A round of κ steps learns a direction; how far along it the model should move is a
separate question, which the step size of the round only answers by its rule. Here the
run answers it: the loss of one batch the round did not train on, at η = 0 (the round
dropped), 1 (as trained) and 2 (twice as far), and η at the minimum of the parabola
through the three, kept within [0, 2] where it was measured. Three forward passes a
round, without gradients; η multiplies the boosters' scale, so the ledger records
exactly what is merged.
"""

from __future__ import annotations

import torch
from torch import nn

from xgblora_engine.boosting.booster import BoosterLinear
from xgblora_engine.boosting.loss import count_targets, summed_loss

MULTIPLES = (0.0, 1.0, 2.0)


def parabola_minimum(l0: float, l1: float, l2: float) -> float:
    """η in [0, 2] at the lowest point of the parabola through (0, l0), (1, l1), (2, l2);
    the lowest of the three when the parabola opens downwards (or is a line)."""
    curvature = (l0 - 2 * l1 + l2) / 2
    if curvature <= 0:
        return MULTIPLES[min(range(3), key=(l0, l1, l2).__getitem__)]
    slope = (l1 - l0) - curvature
    return min(max(-slope / (2 * curvature), 0.0), 2.0)


@torch.no_grad()
def best_multiple(model: nn.Module, boosters: dict[str, BoosterLinear], batch: dict[str, torch.Tensor],
                  sum_float=float) -> float:
    """The η to merge the round's boosters at, measured on ``batch``; ``sum_float`` adds a
    number over data-parallel ranks, so every rank takes the same η."""
    scales = {name: b.scaling for name, b in boosters.items()}
    n_targets = sum_float(float(count_targets(batch["labels"])))
    losses = []
    was_training = model.training
    model.eval()
    try:
        for eta in MULTIPLES:
            for name, b in boosters.items():
                b.scaling = scales[name] * eta
            losses.append(sum_float(float(summed_loss(model, batch))) / max(n_targets, 1.0))
    finally:
        for name, b in boosters.items():
            b.scaling = scales[name]
        model.train(was_training)
    return parabola_minimum(*losses)
