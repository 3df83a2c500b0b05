"""Token-level causal-LM loss that only builds logits where there are labels.

With loss on the response only, most positions carry no label; projecting just the
labelled hidden states through the LM head shrinks the largest activation of a small
model (batch × seq × vocab logits) to (labelled tokens × vocab).

A model sharded over GPUs takes its batch on the device of the input embeddings and
returns its hidden states from the last GPU; the LM head may sit on yet another one. So
the label mask follows the hidden states and the targets follow the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts token t+1: targets are labels shifted left, last position ignored."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


def count_targets(labels: torch.Tensor) -> int:
    return int((shifted_targets(labels) != IGNORE).sum())


def summed_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of token cross-entropies (fp32) over the batch's labelled positions."""
    targets = shifted_targets(batch["labels"])
    keep = targets != IGNORE
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              use_cache=False).last_hidden_state
    logits = model.get_output_embeddings()(hidden[keep.to(hidden.device)]).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-2 style soft-capping is part of the model's logits
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets[keep].to(logits.device), reduction="sum")


def input_device(model: nn.Module) -> torch.device:
    """Where batches go: the device of the input embeddings (the first GPU of a shard), or
    the CPU for a model whose weights are left on disk (they wait on the meta device)."""
    device = model.get_input_embeddings().weight.device
    return torch.device("cpu") if device.type == "meta" else device


def batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def mean_loss(model: nn.Module, batches, device: torch.device) -> tuple[float, int]:
    """Token-weighted mean loss over an iterable of batches; (loss, number of targets)."""
    total, count = 0.0, 0
    for batch in batches:
        batch = batch_to(batch, device)
        total += float(summed_loss(model, batch))
        count += count_targets(batch["labels"])
    return (total / count if count else float("nan")), count
