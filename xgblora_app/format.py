"""Numbers as people read them (no Qt)."""

from __future__ import annotations

from xgblora_engine.memory.units import (
    human_bytes,  # noqa: F401 - one byte format for engine and window
    transfer_text,  # noqa: F401 - one download line for the CLI and the window
)
from xgblora_engine.payloads import Device
from xgblora_engine.runs import human_duration as duration  # noqa: F401 - one format for the CLI and the window
from xgblora_engine.runs import loss_text as loss  # noqa: F401


def gigabytes(n: float) -> str:
    """Memory as a device is sold: '24 GB' (whole), '7.5 GB' under 10."""
    gb = n / 2**30
    return f"{gb:.0f} GB" if gb >= 10 else f"{gb:.1f} GB"


def device_label(device: Device) -> str:
    """One line per device of the worker's Hello: 'cuda:0 NVIDIA RTX 4090 · 24 GB (21 GB free)'."""
    name = device.device
    label = name if name == "cpu" else f"{name} {device.name}".rstrip()
    total, free = device.total_bytes, device.free_bytes
    if total:
        label += f" · {gigabytes(total)}" + (" RAM" if name == "cpu" else "")
        if free is not None:
            label += f" ({gigabytes(free)} free)"
    return label


def human_count(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


