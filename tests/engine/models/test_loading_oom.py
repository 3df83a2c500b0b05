"""Out of memory while the weights load is reported as such, with remedies that help."""

import pytest
import torch

from xgblora_engine.errors import UserError
from xgblora_engine.models import loading
from xgblora_engine.models.source import ModelSource

CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.65 GiB "
            "of which 1.20 GiB is free.")
STAND_INS = {
    "torch": lambda: torch.OutOfMemoryError(CUDA_OOM),
    "cuda runtime": lambda: RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported later"),
    "cublas": lambda: RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    "host": lambda: MemoryError(),
    "cpu allocator": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                          "can't allocate memory: you tried to allocate 8589934592 bytes."),
}


def load_raising(monkeypatch, error, dtype=torch.float32, quantize="none", device_map=None):
    import transformers

    def from_pretrained(*args, **kwargs):
        raise error()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    if quantize != "none":
        monkeypatch.setattr(loading, "bnb_config", lambda *a: None)
    source = ModelSource(kind="folder", path="/models/llama-8b", display_name="llama-8b")
    with pytest.raises(UserError) as info:
        loading._load_weights(source, device_map or {"": "cuda:0"}, dtype, quantize)
    return info.value


@pytest.mark.parametrize("kind", STAND_INS)
def test_oom_while_loading_says_out_of_memory_never_a_broken_folder(monkeypatch, kind):
    error = load_raising(monkeypatch, STAND_INS[kind])
    assert error.message.startswith("out of memory while loading model /models/llama-8b (fp32)")
    assert "complete Hugging Face model folder" not in error.hint and "--quantize none" not in error.hint
    assert "a smaller model" in error.hint


def test_fp32_on_a_gpu_suggests_half_precision_and_4bit(monkeypatch):
    error = load_raising(monkeypatch, STAND_INS["torch"])
    assert "on cuda:0" in error.message
    assert "--dtype bf16" in error.hint and "--quantize 4bit" in error.hint and "--shard-gpus" in error.hint


def test_a_quantized_load_that_runs_out_never_suggests_dropping_the_quantization(monkeypatch):
    error = load_raising(monkeypatch, STAND_INS["torch"], torch.bfloat16, "8bit")
    assert "(bf16, 8bit base)" in error.message
    assert "--quantize 4bit" in error.hint and "--dtype" not in error.hint and "--quantize none" not in error.hint
    error = load_raising(monkeypatch, STAND_INS["cuda runtime"], torch.bfloat16, "4bit")
    assert "--quantize" not in error.hint and "a smaller model" in error.hint


def test_a_sharded_load_names_every_gpu_and_the_share_remedy(monkeypatch):
    error = load_raising(monkeypatch, STAND_INS["cublas"], torch.bfloat16, device_map={"model.layers.0": 0,
                                                                                       "lm_head": 1})
    assert "on cuda:0 + cuda:1" in error.message and "--shard-gpus N" in error.hint and "(now 2)" in error.hint


def test_on_the_cpu_the_remedies_are_about_system_memory(monkeypatch):
    error = load_raising(monkeypatch, STAND_INS["host"], device_map={"": "cpu"})
    assert "the CPU (system memory)" in error.message
    assert "--quantize" not in error.hint and "--shard-gpus" not in error.hint and "--dtype bf16" in error.hint


def test_other_load_errors_keep_their_messages(monkeypatch):
    error = load_raising(monkeypatch, lambda: OSError("no file named model.safetensors"))
    assert "complete Hugging Face model folder" in error.hint
    error = load_raising(monkeypatch, lambda: RuntimeError("named symbol not found"), quantize="4bit")
    assert "--quantize none" in error.hint
