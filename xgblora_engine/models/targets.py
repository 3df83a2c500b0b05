"""Find the transformer blocks and the linears inside them, from the architecture itself.

No per-model tables: the blocks are the largest ModuleList of same-class modules that
hold linears, and the targets are the linear-like modules inside a block (nn.Linear,
GPT-2's Conv1D, bitsandbytes 4-/8-bit linears, and any wrapper around one of those that
keeps it as ``base_layer``, e.g. an attached booster or a merged low-rank path). Works for
llama, qwen2, mistral, gemma, phi, phi3, gpt2 and gpt-neox alike.
"""

from __future__ import annotations

from torch import nn

from xgblora_engine.errors import UserError

# Matched by class name so that bitsandbytes and transformers are not imported here.
LINEAR_CLASS_NAMES = ("Conv1D", "Linear4bit", "Linear8bitLt")


def is_linear(module: nn.Module) -> bool:
    """A module that computes x·Wᵀ (+b): a boosting target."""
    if isinstance(module, nn.Linear) or type(module).__name__ in LINEAR_CLASS_NAMES:
        return True
    base = getattr(module, "base_layer", None)
    return isinstance(base, nn.Module) and is_linear(base)


def is_fan_in_fan_out(module: nn.Module) -> bool:
    """True when the weight is stored in×out (GPT-2's Conv1D) instead of nn.Linear's out×in."""
    base = getattr(module, "base_layer", None)
    if isinstance(base, nn.Module):
        return is_fan_in_fan_out(base)
    return type(module).__name__ == "Conv1D"


def _is_block_list(module: nn.Module) -> bool:
    if not isinstance(module, nn.ModuleList) or len(module) == 0:
        return False
    same_class = len({type(m) for m in module}) == 1
    return same_class and any(is_linear(m) for m in module[0].modules())


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted path, ModuleList) of the transformer blocks.

    Lists nested inside another candidate (e.g. a per-layer list of MoE experts, which can
    be longer than the list of layers) are skipped: the blocks are the outermost list."""
    candidates = [(name, m) for name, m in model.named_modules() if _is_block_list(m)]
    outer = [(name, m) for name, m in candidates
             if not any(name.startswith(other + ".") for other, _ in candidates if other)]
    if not outer:
        raise UserError(f"cannot find the transformer layers of {type(model).__name__}",
                        "XGBLoRA needs a decoder made of repeated blocks "
                        "(llama, qwen2, mistral, gemma, phi, gpt2, gpt-neox, ...)")
    return max(outer, key=lambda item: len(item[1]))


def layer_linears(layer: nn.Module) -> dict[str, nn.Module]:
    """Linears of one block by their path inside it; a wrapper hides the linear it wraps."""
    found: dict[str, nn.Module] = {}
    for name, module in layer.named_modules():
        if name and is_linear(module) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def target_names(model: nn.Module) -> list[str]:
    """Sorted distinct leaf names of the linears in a block (e.g. q_proj, up_proj)."""
    _, layers = find_layers(model)
    return sorted({_leaf(name) for layer in layers for name in layer_linears(layer)})


def find_targets(model: nn.Module, layer_indices: list[int] | None = None,
                 names: list[str] | None = None) -> dict[str, nn.Module]:
    """Full dotted name -> linear module inside the given layers (all layers by default),
    optionally only those whose leaf name is in ``names``."""
    path, layers = find_layers(model)
    if names:
        _check_names(names, target_names(model))
    indices = range(len(layers)) if layer_indices is None else layer_indices
    _check_indices(indices, len(layers))
    targets: dict[str, nn.Module] = {}
    for i in indices:
        for name, module in layer_linears(layers[i]).items():
            if not names or _leaf(name) in names:
                targets[f"{path}.{i}.{name}"] = module
    return targets


def _check_names(names: list[str], available: list[str]) -> None:
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(f"unknown target modules {unknown}",
                        f"the layers of this model have: {', '.join(available)}")


def _check_indices(indices, n_layers: int) -> None:
    bad = [i for i in indices if not 0 <= i < n_layers]
    if bad:
        raise UserError(f"layer indices {bad} are out of range: the model has {n_layers} layers",
                        f"use indices from 0 to {n_layers - 1}")


def layer_index_of(module_name: str, layers_path: str | None = None) -> int:
    """The block index in a dotted target name, e.g. 'model.layers.12.mlp.up_proj' -> 12.

    With ``layers_path`` the index is the component right after it; without, the first
    all-digit component (blocks are the only numbered lists on a target's path)."""
    if layers_path is not None:
        prefix = layers_path + "."
        if not module_name.startswith(prefix):
            raise ValueError(f"{module_name!r} is not inside {layers_path!r}")
        return int(module_name[len(prefix):].split(".", 1)[0])
    for part in module_name.split("."):
        if part.isdigit():
            return int(part)
    raise ValueError(f"{module_name!r} names no layer index")
