"""Spreading a model over GPUs: what may be asked, and where each module goes.

No GPU here: the placement is planned on an empty (meta) model against made-up GPU
capacities, which is all the planner reads on a real machine too."""

import logging
import math

import pytest
import torch
from accelerate.utils import compute_module_sizes
from transformers import AutoModelForCausalLM, LlamaConfig

from xgblora_engine import memory
from xgblora_engine.config import ModelConfig, RunConfig
from xgblora_engine.errors import UserError
from xgblora_engine.models import sharding
from xgblora_engine.models.loading import load_model
from xgblora_engine.models.shape import shape_of
from xgblora_engine.models.sharding import (
    check_not_data_parallel,
    empty_model,
    head_is_tied,
    no_split_classes,
    plan_device_map,
    planning_dtypes,
    reserve_per_gpu,
    shard_gpus_to_use,
)

KB = 1024


@pytest.fixture(autouse=True)
def quiet_accelerate():
    """accelerate warns that GPU indices given to it do not exist on this machine."""
    logger = logging.getLogger("accelerate.utils.modeling")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def meta_llama(layers=8, tied=False):
    from accelerate import init_empty_weights

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()
    return model


def per_gpu(model, device_map, dtype=torch.float32, special=None):
    """(bytes of weights, decoder layers) placed on each GPU."""
    sizes = compute_module_sizes(model, dtype=dtype, special_dtypes=special)
    placed: dict[int, list] = {}
    for name, gpu in device_map.items():
        weight_bytes, layers = placed.get(gpu, (0, 0))
        placed[gpu] = (weight_bytes + sizes[name], layers + name.startswith("model.layers."))
    return placed


# --- what may be asked ------------------------------------------------------------------
def test_one_gpu_means_no_shard():
    assert shard_gpus_to_use(1, "auto", cuda_available=False, cuda_count=0) == []
    assert shard_gpus_to_use(3, "auto", True, 4) == [0, 1, 2]
    assert shard_gpus_to_use(2, "CUDA", True, 2) == [0, 1]


@pytest.mark.parametrize("gpus, device, cuda, count, message, hint", [
    (2, "auto", False, 0, "sharding the model over 2 GPUs was asked for but no CUDA GPU is available",
     "use --shard-gpus 1"),
    (2, "auto", True, 1, "over 2 GPUs was asked for but 1 GPU(s) found", "use --shard-gpus 1 (one GPU)"),
    (4, "auto", True, 3, "over 4 GPUs was asked for but 3 GPU(s) found", "use --shard-gpus 3"),
    (2, "cpu", True, 2, "--device cpu and --shard-gpus 2 do not go together: a sharded model uses cuda:0 to cuda:1",
     "leave --device auto"),
    (2, "cuda:1", True, 2, "--device cuda:1 and --shard-gpus 2 do not go together", "CUDA_VISIBLE_DEVICES"),
])
def test_impossible_shards_are_refused_with_what_to_do(gpus, device, cuda, count, message, hint):
    with pytest.raises(UserError) as info:
        shard_gpus_to_use(gpus, device, cuda, count)
    assert message in info.value.message and hint in info.value.hint


def test_data_parallel_and_sharding_do_not_mix():
    check_not_data_parallel(4, 1)
    check_not_data_parallel(1, 4)
    with pytest.raises(UserError, match=r"data-parallel processes \(2\) and a model sharded over 2 GPUs do not mix") as info:
        check_not_data_parallel(2, 2)
    assert "--num-processes N alone" in info.value.hint and "--shard-gpus N" in info.value.hint


def test_loading_a_shard_on_this_cpu_only_machine_says_why_not(tiny_model_dir):
    with pytest.raises(UserError, match="no CUDA GPU is available"):
        load_model(ModelConfig(name=str(tiny_model_dir), shard_gpus=2))


def test_loading_a_shard_over_more_gpus_than_present(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"2 GPUs was asked for but 1 GPU\(s\) found"):
        load_model(ModelConfig(name=str(tiny_model_dir), shard_gpus=2))


def test_shard_setting_is_validated_with_the_run():
    cfg = RunConfig()
    cfg.model.shard_gpus = 0
    with pytest.raises(UserError, match="invalid number of GPUs to shard over: 0"):
        cfg.validate()


# --- where each module goes -----------------------------------------------------------
@pytest.mark.parametrize("gpus", [2, 3])
def test_layers_are_kept_whole_and_balanced_over_equal_gpus(gpus):
    model = meta_llama()
    total = compute_module_sizes(model, dtype=torch.float32)[""]
    free = {i: total for i in range(gpus)}  # room for the whole model on each: balance, not need, decides
    device_map = plan_device_map(model, free, {}, no_split_classes(model), torch.float32)
    assert not [n for n in device_map if n.startswith("model.layers.") and n.count(".") > 2]  # whole layers
    assert set(device_map.values()) == set(range(gpus))
    layers = [per_gpu(model, device_map)[g][1] for g in range(gpus)]
    assert sum(layers) == 8 and max(layers) - min(layers) <= 2
    owner = [device_map[f"model.layers.{i}"] for i in range(8)]
    assert owner == sorted(owner)  # in order: a forward pass crosses each GPU boundary once


def test_each_gpu_keeps_its_reserve_free():
    model = meta_llama()
    total = compute_module_sizes(model, dtype=torch.float32)[""]
    free = {0: total, 1: total}
    reserve = {0: total // 2, 1: total // 5}  # GPU 0 keeps more back
    device_map = plan_device_map(model, free, reserve, no_split_classes(model), torch.float32)
    placed = per_gpu(model, device_map)
    for gpu in (0, 1):
        assert placed[gpu][0] <= free[gpu] - reserve[gpu]
    assert placed[0][1] < placed[1][1]


def test_a_model_that_cannot_fit_says_by_how_much_and_what_to_do():
    model = meta_llama()
    total = compute_module_sizes(model, dtype=torch.float32)[""]
    with pytest.raises(UserError) as info:
        plan_device_map(model, {0: total // 2, 1: total // 2}, {0: total // 10, 1: total // 10},
                        no_split_classes(model), torch.float32)
    message = info.value.message
    assert f"the model's weights ({memory.human_bytes(total)}) do not fit on 2 GPUs" in message
    assert "stays free for activations, boosters, logits" in message
    assert "--quantize 4bit" in info.value.hint and "more GPUs" in info.value.hint


def test_packed_in_order_when_a_balanced_split_does_not_fit():
    model = meta_llama()
    sizes = compute_module_sizes(model, dtype=torch.float32)
    total, layer = sizes[""], sizes["model.layers.0"]
    free = {0: total - 2 * layer, 1: 4 * layer}  # unequal GPUs: half the model would not fit on GPU 1
    device_map = plan_device_map(model, free, {}, no_split_classes(model), torch.float32)
    placed = per_gpu(model, device_map)
    assert all(placed[g][0] <= free[g] for g in (0, 1)) and placed[0][1] + placed[1][1] == 8
    assert placed[0][1] > placed[1][1]


def test_a_4bit_base_is_planned_at_its_stored_size():
    model = meta_llama()
    dtype, special = planning_dtypes(model, "4bit", torch.bfloat16)
    full = compute_module_sizes(model, dtype=torch.bfloat16)
    packed = compute_module_sizes(model, dtype=dtype, special_dtypes=special)
    assert packed["model.embed_tokens"] == full["model.embed_tokens"]  # stays in the compute dtype
    assert packed["lm_head"] == full["lm_head"]
    assert packed["model.layers.0.mlp.up_proj"] * 4 == full["model.layers.0.mlp.up_proj"]  # 0.5 vs 2 bytes
    free = {0: full[""] // 3, 1: full[""] // 3}
    with pytest.raises(UserError):
        plan_device_map(model, free, {}, no_split_classes(model), torch.bfloat16)
    assert set(plan_device_map(model, free, {}, no_split_classes(model), dtype, special).values()) <= {0, 1}


def test_blocks_are_never_split_even_without_the_model_s_own_list():
    model = meta_llama()
    model._no_split_modules = None
    assert no_split_classes(model) == ["LlamaDecoderLayer"]


# --- what each GPU keeps free ---------------------------------------------------------
def test_reserve_holds_activations_boosters_and_runtime_and_logits_on_the_head_gpu():
    shape = shape_of(meta_llama())
    cfg = RunConfig()
    cfg.boost.layers_per_round = 3
    untied = reserve_per_gpu(shape, cfg, "bf16", 4, head_on_first=False)
    tied = reserve_per_gpu(shape, cfg, "bf16", 4, head_on_first=True)
    layers = math.ceil(8 / 4) + 1
    full = memory.estimate(shape, cfg, "cuda", "bf16")
    logits = full.parts["logits"]
    more = RunConfig()
    more.boost.layers_per_round = 4
    boosted = memory.estimate(shape, more, "cuda", "bf16").parts["activations"] - full.parts["activations"]
    frozen = (full.parts["activations"] - 3 * boosted) / 8  # a layer backward passes through
    activations = layers * frozen + 3 * boosted  # all three drawn layers may be this GPU's
    assert untied[3] - untied[0] == pytest.approx(logits * 1.1, rel=1e-6)  # logits (+ allocator slack) on the last
    assert tied[0] == untied[3] and tied[3] == untied[0]
    without_logits = untied[0]
    carried = layers * cfg.boost.rank * shape.linear_dims_per_layer * 12  # every layer here: A and 2+2 moments
    expected = (activations + 3 * cfg.boost.rank * shape.linear_dims_per_layer * 16
                + carried + memory.CUDA_RUNTIME + 0.1 * activations)
    assert without_logits == pytest.approx(expected, rel=1e-6)


def test_plan_from_a_model_folder_with_made_up_gpus(tiny_model_dir, monkeypatch):
    """The whole path on a real checkpoint: config read, empty model, reserve, plan."""
    # each made-up GPU: the CUDA runtime's share plus a little more than half the 177 KB model
    monkeypatch.setattr(sharding, "free_memory", lambda gpus: {i: memory.CUDA_RUNTIME + 400 * KB for i in gpus})
    cfg = RunConfig()
    cfg.train.batch_size, cfg.data.seq_len = 1, 16
    # the made-up budget is sized for the boosters' reserve at rank 4, one layer a round
    cfg.boost.rank, cfg.boost.layers_per_round = 4, 1
    device_map = sharding.shard_device_map(str(tiny_model_dir), {}, cfg, "fp32", torch.float32, [0, 1], "none")
    assert {device_map[f"model.layers.{i}"] for i in range(4)} == {0, 1}
    model = empty_model(str(tiny_model_dir), {})
    assert next(model.parameters()).device.type == "meta" and not head_is_tied(model)
