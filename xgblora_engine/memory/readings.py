"""Live memory readings: the process RSS, the CUDA allocator, and a sampled RSS peak
(the CPU allocator keeps no peak counter). torch is imported only for CUDA readings."""

from __future__ import annotations

import threading
import time

import psutil


def rss() -> int:
    return psutil.Process().memory_info().rss


def snapshot(device: str) -> dict:
    reading = {"device": device, "allocated": None, "reserved": None, "peak": None, "rss": rss()}
    if device.startswith("cuda"):
        import torch

        reading.update(allocated=torch.cuda.memory_allocated(device), reserved=torch.cuda.memory_reserved(device),
                       peak=torch.cuda.max_memory_allocated(device))
    return reading


def available(device: str, limit: int | None = None) -> int:
    """Memory a run may use: the device's free memory (CUDA), or free RAM plus what this
    process already holds (CPU), capped by a user-set limit."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        value = free + torch.cuda.memory_allocated(device)
    else:
        value = psutil.virtual_memory().available + rss()
    return min(value, limit) if limit else value


class PeakRSS:
    """Samples RSS in a thread while the block runs; ``peak`` is the highest reading."""

    def __init__(self, every: float = 0.002) -> None:
        self.every, self.peak = every, 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.peak = rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(self.every)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
