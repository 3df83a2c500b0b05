"""bitsandbytes 4-bit (nf4) and 8-bit bases, and reading their weights back in full precision.

Behaviour on CPU (bitsandbytes 0.50, measured here): both layers run forward and backward;
the gradient w.r.t. the input is exactly ``grad · dequantized_weight`` in both.
* Linear4bit computes ``x · dequant(W)ᵀ`` in its compute dtype (exact in fp32), training or
  not, for any row length (not only multiples of 64).
* Linear8bitLt in training mode computes ``x · dequant(W)ᵀ`` in x's dtype; in eval mode it
  also quantizes the activations to int8 (LLM.int8, ~1e-2 abs error) and casts them to
  fp16 first. It moves ``weight.SCB`` to ``module.state.SCB`` at its first forward.

transformers cannot apply a BitsAndBytesConfig while loading a .gguf file ("You cannot
combine Quantization and loading a model from a GGUF file"), so such a model is loaded
dequantized and its block linears are swapped here with the arguments transformers uses.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from xgblora_engine.errors import UserError
from xgblora_engine.models.targets import find_layers, is_linear, layer_linears

# Logged by bitsandbytes on CPU: an optional Hub kernel it cannot fetch offline (it falls
# back to its own), and an fp16-cast notice repeated on every 8-bit forward in eval mode.
NOISY_LOGGERS = ("bitsandbytes.backends.cpu.ops", "bitsandbytes.autograd._functions")
LLM_INT8_THRESHOLD = 6.0  # transformers' default outlier threshold for 8-bit


def import_bitsandbytes():
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        raise UserError("4-/8-bit loading needs the bitsandbytes package",
                        "install it with `pip install bitsandbytes`, or use --quantize none") from None
    return bitsandbytes


def bnb_config(kind: str, compute_dtype: torch.dtype):
    """The BitsAndBytesConfig for ``kind`` ("4bit": nf4 with double quantization)."""
    from transformers import BitsAndBytesConfig

    import_bitsandbytes()
    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=LLM_INT8_THRESHOLD)
    raise UserError(f"invalid quantization '{kind}'", "choose one of: none, 4bit, 8bit")


def quantize_in_place(model: nn.Module, kind: str, compute_dtype: torch.dtype,
                      device: str | torch.device | None = "cpu") -> nn.Module:
    """Swap every nn.Linear inside the transformer blocks for a bitsandbytes one on ``device``
    (None: on the linear's own device, as in a model sharded over GPUs).

    LM head and embeddings stay in full precision, as transformers leaves them."""
    bnb = import_bitsandbytes()
    _, layers = find_layers(model)
    for layer in layers:
        for name, module in layer_linears(layer).items():
            if type(module) is nn.Linear:
                _replace(layer, name, _bnb_linear(bnb, module, kind, compute_dtype, device or module.weight.device))
    return model


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _bnb_linear(bnb, linear: nn.Linear, kind: str, compute_dtype: torch.dtype, device) -> nn.Module:
    has_bias = linear.bias is not None
    # Both parameter classes quantize when moved from the CPU to their device.
    weight = linear.weight.data.detach().cpu()
    if kind == "4bit":
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, has_bias, compute_dtype,
                              compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8)
        q.weight = bnb.nn.Params4bit(weight, requires_grad=False, **q.weight.__dict__).to(device)
    else:
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, has_bias,
                                has_fp16_weights=False, threshold=LLM_INT8_THRESHOLD)
        q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False).to(device)
    if has_bias:
        q.bias = nn.Parameter(linear.bias.data.to(device), requires_grad=False)
    return q


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The weight a linear-like module applies, in fp32, shaped out×in.

    4-bit: ``dequantize_4bit(weight.data, weight.quant_state)``; 8-bit: the int8 rows times
    their scales ``SCB / 127`` (``SCB`` lives on the weight until the first forward, then on
    ``module.state``)."""
    base = getattr(module, "base_layer", None)
    if isinstance(base, nn.Module) and is_linear(base):
        return dequantized_weight(base)
    kind = type(module).__name__
    weight = module.weight
    if kind == "Linear4bit":
        bnb = import_bitsandbytes()
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    if kind == "Linear8bitLt":
        scb = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
        return weight.data.float() * (scb.float().unsqueeze(1) / 127.0)
    if kind == "Conv1D":
        return weight.detach().float().t()
    return weight.detach().float()


def logical_numel(param: torch.Tensor) -> int:
    """Parameters a tensor stands for: a packed 4-bit weight holds two per byte."""
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return math.prod(state.shape)
    return param.numel()
