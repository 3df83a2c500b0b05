"""What the memory estimate needs to know of a loaded (or meta-device) model: its
dimensions, and which device holds which layers. Read from the modules; the arithmetic
itself lives in memory/estimate.py, which never touches a model."""

from __future__ import annotations

from torch import nn

from xgblora_engine.boosting.booster import linear_shape
from xgblora_engine.memory.estimate import DeviceShare, Shape
from xgblora_engine.models.quantize import logical_numel
from xgblora_engine.models.targets import find_layers, find_targets


def shape_of(model: nn.Module) -> Shape:
    _, layers = find_layers(model)
    dims = [linear_shape(m) for m in find_targets(model, [0]).values()]
    cfg = model.config
    hidden = int(getattr(cfg, "hidden_size", 0) or cfg.n_embd)
    inter = int(getattr(cfg, "intermediate_size", 0) or getattr(cfg, "n_inner", 0) or 4 * hidden)
    return Shape(sum(logical_numel(p) for p in model.parameters()), len(layers), hidden, inter,
                 int(cfg.vocab_size), sum(i * o for i, o in dims), sum(i + o for i, o in dims))


def shares_of(model: nn.Module) -> list[DeviceShare]:
    """One share per device holding weights, read from where each parameter is; the
    input embeddings' device comes first (it receives the batch)."""
    _, layers = find_layers(model)
    layer_devices = [str(next(layer.parameters()).device) for layer in layers]
    params: dict[str, int] = {}
    for p in model.parameters():
        params[str(p.device)] = params.get(str(p.device), 0) + logical_numel(p)
    head = model.get_output_embeddings()
    head_device = str(head.weight.device) if head is not None else layer_devices[-1]
    first = str(model.get_input_embeddings().weight.device)
    order = list(dict.fromkeys([first, *layer_devices, *params]))
    return [DeviceShare(d, layer_devices.count(d), params.get(d, 0), d == head_device) for d in order]
