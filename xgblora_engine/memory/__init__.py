"""Memory: live readings (readings.py), the preflight's analytic estimate per device
(estimate.py), and bytes as people read them (units.py). None of them loads torch at
import; what the estimate reads from a model is in models/shape.py."""

from xgblora_engine.memory.estimate import (
    BYTES,
    CPU_RUNTIME,
    CUDA_RUNTIME,
    FITS,
    QUANT_BYTES,
    TIGHT,
    DeviceShare,
    Estimate,
    Shape,
    device_checks,
    estimate,
    estimate_share,
    remedies,
    share_shape,
    tightest,
    verdict,
)
from xgblora_engine.memory.readings import PeakRSS, available, rss, snapshot
from xgblora_engine.memory.units import human_bytes, parse_size, summary

__all__ = ["BYTES", "CPU_RUNTIME", "CUDA_RUNTIME", "FITS", "QUANT_BYTES", "TIGHT", "DeviceShare", "Estimate",
           "PeakRSS", "Shape", "available", "device_checks", "estimate", "estimate_share", "human_bytes",
           "parse_size", "remedies", "rss", "share_shape", "snapshot", "summary", "tightest", "verdict"]
