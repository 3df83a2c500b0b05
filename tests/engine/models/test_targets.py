import pytest
import torch
from torch import nn

from tests.conftest import TINY_LAYERS
from xgblora_engine.errors import UserError
from xgblora_engine.models.targets import (
    find_layers,
    find_targets,
    is_fan_in_fan_out,
    is_linear,
    layer_index_of,
    target_names,
)

LLAMA_LIKE = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
EXPECTED = {  # family: (layers path, leaf names of the linears in a block, linears per block)
    "llama": ("model.layers", LLAMA_LIKE, 7),
    "qwen2": ("model.layers", LLAMA_LIKE, 7),
    "mistral": ("model.layers", LLAMA_LIKE, 7),
    "gemma": ("model.layers", LLAMA_LIKE, 7),
    "phi": ("model.layers", {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}, 6),
    "phi3": ("model.layers", {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}, 4),
    "gpt2": ("transformer.h", {"c_attn", "c_proj", "c_fc"}, 4),  # attn.c_proj and mlp.c_proj
    "gpt_neox": ("gpt_neox.layers", {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}, 4),
}


def test_layers_and_targets_are_discovered(tiny_models):
    family, model = tiny_models
    path, names, per_block = EXPECTED[family]
    found_path, layers = find_layers(model)
    assert found_path == path and len(layers) == TINY_LAYERS
    assert set(target_names(model)) == names and target_names(model) == sorted(names)
    targets = find_targets(model, [2])
    assert all(n.startswith(f"{path}.2.") for n in targets)
    assert {n.rsplit(".", 1)[-1] for n in targets} == names and len(targets) == per_block
    assert all(model.get_submodule(n) is m for n, m in targets.items())
    assert len(find_targets(model)) == TINY_LAYERS * per_block
    assert {layer_index_of(n, path) for n in find_targets(model)} == set(range(TINY_LAYERS))


def test_targets_never_include_head_or_embeddings(tiny_models):
    _, model = tiny_models
    outside = {id(model.get_output_embeddings()), id(model.get_input_embeddings())}
    assert not any(id(m) in outside for m in find_targets(model).values())


@pytest.mark.parametrize("tiny_models", ["gpt2"], indirect=True)
def test_gpt2_conv1d_is_fan_in_fan_out(tiny_models):
    _, model = tiny_models
    targets = find_targets(model, [0])
    assert targets and all(type(m).__name__ == "Conv1D" and is_fan_in_fan_out(m) for m in targets.values())
    c_fc = targets["transformer.h.0.mlp.c_fc"]
    assert tuple(c_fc.weight.shape) == (32, 128)  # in × out
    assert not is_fan_in_fan_out(nn.Linear(4, 4))


def test_target_filter_and_unknown_name(tiny_llama):
    assert sorted(find_targets(tiny_llama, [0], ["q_proj", "v_proj"])) == [
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    with pytest.raises(UserError, match=r"unknown target modules \['qproj'\]") as info:
        find_targets(tiny_llama, [0], ["qproj"])
    assert "q_proj" in info.value.hint and "down_proj" in info.value.hint


def test_out_of_range_layer_index(tiny_llama):
    with pytest.raises(UserError, match=r"layer indices \[4\] are out of range: the model has 4 layers"):
        find_targets(tiny_llama, [0, 4])


class Wrapper(nn.Module):
    """Stands for an attached booster or a merged low-rank path: keeps the linear as base_layer."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base_layer = base
        self.extra = nn.Linear(base.in_features, 1, bias=False)

    def forward(self, x):
        return self.base_layer(x)


def test_a_wrapped_linear_stays_one_target_under_its_own_name(tiny_llama):
    attn = tiny_llama.model.layers[1].self_attn
    attn.q_proj = Wrapper(attn.q_proj)
    targets = find_targets(tiny_llama, [1])
    assert isinstance(targets["model.layers.1.self_attn.q_proj"], Wrapper)
    assert not any(".base_layer" in n or ".extra" in n for n in targets)
    assert len(targets) == 7 and is_linear(attn.q_proj)


def test_outermost_block_list_wins_over_longer_nested_lists():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(8))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(Block() for _ in range(2))

    path, layers = find_layers(Model())
    assert path == "layers" and len(layers) == 2


def test_no_blocks_is_a_user_error():
    with pytest.raises(UserError, match="cannot find the transformer layers of Sequential"):
        find_layers(nn.Sequential(nn.Linear(2, 2)))


def test_layer_index_of():
    assert layer_index_of("model.layers.12.mlp.up_proj") == 12
    assert layer_index_of("transformer.h.3.attn.c_attn", "transformer.h") == 3
    with pytest.raises(ValueError):
        layer_index_of("lm_head")


def test_discovered_targets_run_in_the_forward_pass(tiny_llama):
    """The discovered modules are the ones the forward pass actually uses."""
    ids = torch.tensor([[1, 2, 3]])
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o, name=n: seen.append(name))
             for n, m in find_targets(tiny_llama, [3]).items()]
    tiny_llama(input_ids=ids)
    for h in hooks:
        h.remove()
    assert len(set(seen)) == 7
