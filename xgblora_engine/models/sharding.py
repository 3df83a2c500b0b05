"""One model spread over several GPUs of one process (``--shard-gpus N``), for models
bigger than one card.

The placement is accelerate's: ``get_balanced_memory`` gives each GPU about an equal
share of the weights, then ``infer_auto_device_map`` fills the GPUs in layer order
without splitting a decoder layer (``no_split_module_classes``: the model's
``_no_split_modules`` plus the class of its blocks). Layer i and layer i+1 then sit on
the same GPU or on neighbouring ones, so a forward pass crosses each GPU boundary once,
and accelerate's hooks move the hidden states across.

What a GPU keeps free for training (the *reserve*, subtracted from its free memory
before placing weights) is the preflight's own estimate of everything but weights:
* activations of ⌈L/N⌉ + 1 layers (a balanced split of L layers over N GPUs can leave a
  GPU one layer over its even share; every layer is reached in the worst round);
* boosters, gradients and Adam state of min(k, those layers) layers (the worst draw puts
  all k sampled layers on one GPU);
* the logits buffer, on the GPU that will hold the LM head: the first when the head is
  tied to the input embeddings (it is placed with them), else the last (it comes last);
* the CUDA context and allocator slack, which every GPU pays.
The batch size and sequence length are the run's; after loading, the preflight checks
every GPU again with the placement that was actually made.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xgblora_engine import memory
from xgblora_engine.errors import UserError
from xgblora_engine.memory.units import human_bytes
from xgblora_engine.models.shape import shape_of

SHARD_DEVICES = ("auto", "cuda")


# --- what was asked for -----------------------------------------------------------
def shard_gpus_to_use(shard_gpus: int, device: str, cuda_available: bool, cuda_count: int) -> list[int]:
    """The GPU indices a sharded model spreads over; [] for an unsharded model."""
    if shard_gpus <= 1:
        return []
    if not cuda_available:
        raise UserError(f"sharding the model over {shard_gpus} GPUs was asked for but no CUDA GPU is available",
                        "use --shard-gpus 1, or check the NVIDIA driver and that torch is a CUDA build")
    if cuda_count < shard_gpus:
        fix = f"use --shard-gpus {cuda_count}" if cuda_count >= 2 else "use --shard-gpus 1 (one GPU)"
        raise UserError(f"sharding the model over {shard_gpus} GPUs was asked for but {cuda_count} GPU(s) found",
                        f"{fix}, or load the base in 4-bit (--quantize 4bit) to need fewer")
    if device.strip().lower() not in SHARD_DEVICES:
        raise UserError(f"--device {device} and --shard-gpus {shard_gpus} do not go together: a sharded model "
                        f"uses cuda:0 to cuda:{shard_gpus - 1}",
                        "leave --device auto, and pick the GPUs with CUDA_VISIBLE_DEVICES if needed")
    return list(range(shard_gpus))


def check_not_data_parallel(shard_gpus: int, processes: int) -> None:
    """Data-parallel ranks each hold a whole copy of the model on their own GPU; a
    sharded model already spans the GPUs. Both at once would stack copies on every GPU."""
    if shard_gpus > 1 and processes > 1:
        raise UserError(f"data-parallel processes ({processes}) and a model sharded over {shard_gpus} GPUs do not mix: "
                        "each process would spread its own copy over the same GPUs",
                        "use --num-processes N alone when the model fits on one GPU (faster), or --shard-gpus N "
                        "alone when it does not")


# --- where each module goes --------------------------------------------------------
def plan_device_map(model: nn.Module, free: dict[int, int], reserve: dict[int, int], no_split: list[str],
                    dtype, special_dtypes: dict[str, torch.dtype] | None = None) -> dict[str, int]:
    """module name -> GPU index, every weight on a GPU, each GPU's weights within its free
    memory minus its reserve. Balanced when that fits, else the GPUs are filled in order.
    ``model`` may be on the meta device; only its structure and sizes are read."""
    from accelerate.utils import get_balanced_memory, infer_auto_device_map

    budgets = {i: max(0, free[i] - reserve.get(i, 0)) for i in free}
    balanced = get_balanced_memory(model, dict(budgets), no_split, dtype, special_dtypes)
    for limits in (balanced, budgets):
        device_map = infer_auto_device_map(model, dict(limits), no_split, dtype, special_dtypes)
        if device_map and all(isinstance(d, int) for d in device_map.values()):
            return dict(device_map)
    raise _does_not_fit(model, free, reserve, dtype, special_dtypes)


def _does_not_fit(model, free, reserve, dtype, special_dtypes) -> UserError:
    from accelerate.utils import compute_module_sizes

    weights = compute_module_sizes(model, dtype=dtype, special_dtypes=special_dtypes)[""]
    h = human_bytes
    return UserError(f"the model's weights ({h(weights)}) do not fit on {len(free)} GPUs: {h(sum(free.values()))} free "
                     f"in all, of which {h(sum(reserve.values()))} stays free for activations, boosters, logits and "
                     "the CUDA runtime (whole layers per GPU)",
                     "load the base in 4-bit (--quantize 4bit), shard over more GPUs, or lower the batch size / "
                     "sequence length / enable gradient checkpointing so that each GPU keeps less free")


def no_split_classes(model: nn.Module) -> list[str]:
    """Modules placed whole: the model's own list plus the class of its decoder blocks."""
    from xgblora_engine.models.targets import find_layers

    _, layers = find_layers(model)
    return sorted(set(getattr(model, "_no_split_modules", None) or []) | {type(layers[0]).__name__})


def reserve_per_gpu(shape: memory.Shape, cfg, dtype: str, gpus: int, head_on_first: bool) -> dict[int, int]:
    """Bytes each GPU keeps free for training (see the module docstring for why)."""
    layers = min(shape.n_layers, math.ceil(shape.n_layers / gpus) + 1)
    head_gpu = 0 if head_on_first else gpus - 1
    reserve = {}
    for i in range(gpus):
        share = memory.DeviceShare(f"cuda:{i}", layers, 0, i == head_gpu)
        parts = memory.estimate_share(shape, cfg, share, dtype).parts
        reserve[i] = sum(v for part, v in parts.items() if part != "weights")
    return reserve


def head_is_tied(model: nn.Module) -> bool:
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and head.weight is embeddings.weight


def planning_dtypes(model: nn.Module, quantize: str, dtype: torch.dtype) -> tuple[object, dict[str, torch.dtype] | None]:
    """(dtype, per-parameter exceptions) that size the weights as they will be stored:
    bitsandbytes quantizes the block linears only; the rest stays in the compute dtype."""
    if quantize == "none":
        return dtype, None
    from accelerate.utils import CustomDtype

    from xgblora_engine.models.targets import find_layers, layer_linears

    path, layers = find_layers(model)
    quantized = {f"{path}.{i}.{name}.weight" for i, layer in enumerate(layers) for name in layer_linears(layer)}
    special = {name: dtype for name, _ in model.named_parameters() if name not in quantized}
    return (CustomDtype.INT4 if quantize == "4bit" else torch.int8), special


def empty_model(location: str, kwargs: dict) -> nn.Module:
    """The model's modules on the meta device (no weights read), ties applied."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(location, **kwargs)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()
    return model


def free_memory(gpus: list[int]) -> dict[int, int]:
    return {i: int(torch.cuda.mem_get_info(i)[0]) for i in gpus}


def shard_device_map(location: str, config_kwargs: dict, run, dtype: str, torch_dtype: torch.dtype,
                     gpus: list[int], quantize: str) -> dict[str, int]:
    """The device map to load the model with, planned on its empty (meta) copy."""
    model = empty_model(location, config_kwargs)
    reserve = reserve_per_gpu(shape_of(model), run, dtype, len(gpus), head_is_tied(model))
    return plan_device_map(model, free_memory(gpus), reserve, no_split_classes(model),
                           *planning_dtypes(model, quantize, torch_dtype))
