import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PhiConfig,
    Qwen2Config,
)

from xgblora_engine.boosting.merge import is_fan_in_fan_out
from xgblora_engine.errors import UserError
from xgblora_engine.models.targets import find_layers, find_targets, target_names

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {
    "llama": (LlamaConfig(**SMALL), "model.layers", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    "qwen2": (Qwen2Config(**SMALL), "model.layers", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    "mistral": (MistralConfig(**SMALL), "model.layers", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    "gemma": (GemmaConfig(**SMALL, head_dim=8), "model.layers", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    "phi": (PhiConfig(**SMALL), "model.layers", {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}),
    "phi3": (Phi3Config(**SMALL, pad_token_id=0), "model.layers", {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}),
    "gpt2": (GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=64), "transformer.h", {"c_attn", "c_proj", "c_fc"}),
    "gpt_neox": (GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
                 "gpt_neox.layers", {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_and_targets_are_discovered(family):
    config, path, names = FAMILIES[family]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    found_path, layers = find_layers(model)
    assert found_path == path and len(layers) == 3
    assert set(target_names(model)) == names
    targets = find_targets(model, [2])
    assert all(n.startswith(f"{path}.2.") for n in targets)
    assert {n.rsplit(".", 1)[-1] for n in targets} == names
    assert not any("lm_head" in n or "embed" in n for n in find_targets(model))
    if family == "gpt2":
        assert all(is_fan_in_fan_out(m) for m in targets.values())


def test_target_filter_and_unknown_name(tiny_llama):
    assert sorted(find_targets(tiny_llama, [0], ["q_proj", "v_proj"])) == [
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    with pytest.raises(UserError, match=r"unknown target modules \['qproj'\]") as info:
        find_targets(tiny_llama, [0], ["qproj"])
    assert "q_proj" in info.value.hint
