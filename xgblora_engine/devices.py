"""The devices this machine offers a run: the CPU and each CUDA GPU.

The worker sends this list in its ``Hello``, so the app can show the GPUs and offer to
spread a model over several. Every entry is a ``payloads.Device``.

``bf16`` says whether ``--dtype auto`` picks bf16 there: on a GPU of compute capability
8.0 or newer (what ``torch.cuda.is_bf16_supported`` checks), never on the CPU, where
auto picks fp32.
"""

from __future__ import annotations

import platform

import psutil

from xgblora_engine.payloads import Device

BF16_MIN_MAJOR = 8  # Ampere


def list_devices(cuda=None) -> list[Device]:
    """CPU first, then cuda:0 … cuda:N-1. ``cuda`` stands in for ``torch.cuda`` in tests."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    devices = [cpu_device()]
    if cuda.is_available():
        devices += [gpu_device(cuda, i) for i in range(cuda.device_count())]
    return devices


def cpu_device() -> Device:
    memory = psutil.virtual_memory()
    return Device(device="cpu", name=platform.processor() or platform.machine() or "CPU",
                  total_bytes=int(memory.total), free_bytes=int(memory.available))


def gpu_device(cuda, index: int) -> Device:
    props = cuda.get_device_properties(index)
    major, minor = cuda.get_device_capability(index)
    return Device(device=f"cuda:{index}", name=str(props.name), total_bytes=int(props.total_memory),
                  free_bytes=free_gpu_memory(cuda, index, int(props.total_memory)),
                  bf16=major >= BF16_MIN_MAJOR, compute_capability=f"{major}.{minor}")


def free_gpu_memory(cuda, index: int, total: int) -> int:
    """Free memory as nvidia-smi reports it (NVML) when pynvml is installed: asking CUDA
    instead creates a context on that GPU (a few hundred MB held for the worker's
    lifetime), which a GPU the run does not use should not pay."""
    try:
        return total - int(cuda.device_memory_used(index))
    except Exception:  # noqa: BLE001 - no pynvml, no NVML driver, an NVML error: ask CUDA
        return int(cuda.mem_get_info(index)[0])


def gpu_count(devices: list[Device]) -> int:
    return sum(1 for d in devices if d.is_gpu)
