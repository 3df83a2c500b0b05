"""Find the transformer blocks and the linears inside them, from the architecture itself.

No per-model tables: the blocks are the largest ModuleList of same-class modules, and
the targets are every linear-like module inside a block (nn.Linear, GPT-2's Conv1D,
bitsandbytes 4-/8-bit linears). Works for llama, qwen2, mistral, gemma, phi, phi3,
gpt2 and gpt-neox alike.
"""

from __future__ import annotations

from torch import nn

from xgblora_engine.errors import UserError

LINEAR_CLASSES = ("Linear", "Conv1D", "Linear4bit", "Linear8bitLt", "MergedLowRank")


def is_linear(module: nn.Module) -> bool:
    return type(module).__name__ in LINEAR_CLASSES


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted path, ModuleList) of the transformer blocks."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(m) for m in module}) == 1 and any(is_linear(m) for m in module[0].modules()):
                if best is None or len(module) > len(best[1]):
                    best = (name, module)
    if best is None:
        raise UserError(f"cannot find the transformer layers of {type(model).__name__}",
                        "XGBLoRA needs a decoder made of repeated blocks (llama, qwen2, mistral, gemma, phi, gpt2, ...)")
    return best


def _layer_linears(layer: nn.Module) -> dict[str, nn.Module]:
    """Leaf linears of a block, by path inside it; wrapped bases are not counted twice."""
    found: dict[str, nn.Module] = {}
    for name, module in layer.named_modules():
        if name and is_linear(module) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found


def target_names(model: nn.Module) -> list[str]:
    """Distinct leaf names of the linears in a block (e.g. q_proj, up_proj)."""
    _, layers = find_layers(model)
    return sorted({name.rsplit(".", 1)[-1] for name in _layer_linears(layers[0])})


def find_targets(model: nn.Module, layer_indices: list[int] | None = None,
                 names: list[str] | None = None) -> dict[str, nn.Module]:
    """Full dotted name -> linear module, for the given layers (all by default)."""
    path, layers = find_layers(model)
    if names:
        unknown = sorted(set(names) - set(target_names(model)))
        if unknown:
            raise UserError(f"unknown target modules {unknown}",
                            f"the layers of this model have: {', '.join(target_names(model))}")
    indices = range(len(layers)) if layer_indices is None else layer_indices
    targets = {}
    for i in indices:
        for name, module in _layer_linears(layers[i]).items():
            if not names or name.rsplit(".", 1)[-1] in names:
                targets[f"{path}.{i}.{name}"] = module
    return targets


def layer_index_of(module_name: str, layers_path: str) -> int:
    rest = module_name[len(layers_path) + 1:]
    return int(rest.split(".", 1)[0])
