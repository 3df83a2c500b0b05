"""From a memory estimate to the preflight's answer: each device's check, the tightest
one's verdict, its remedies and the sentence that says it.

Loads no torch: the session feeds it a loaded model's shape and measured peaks, the
demo engine the shape of the embedded model, so both answer with the same rules.
"""

from __future__ import annotations

from collections.abc import Callable

from xgblora_engine import memory
from xgblora_engine import protocol as P
from xgblora_engine.payloads import VERDICT_WORDS, DeviceCheck


def preflight_result(shape: memory.Shape, cfg, shares: list[memory.DeviceShare], dtype: str,
                     available_on: Callable[[str], int], labelled: int | None = None, tokens: int | None = None,
                     measured: dict[str, int] | None = None) -> P.PreflightResult:
    """The verdict of the tightest device holding weights, with remedies when it is not "fits"."""
    checks = memory.device_checks(shape, cfg, shares, dtype, available_on, labelled, tokens, measured)
    worst = memory.tightest(checks)
    share = next(s for s in shares if s.device == worst.device)
    fixes = (memory.remedies(shape, cfg, device_kind(share.device), dtype, labelled, share, tokens)
             if worst.verdict != "fits" else [])
    return P.PreflightResult(verdict=worst.verdict, predicted_peak=worst.predicted_peak,
                             available=worst.available, parts=worst.parts, measured_peak=worst.measured_peak,
                             remedies=fixes, device=worst.device, message=preflight_message(checks, worst),
                             devices=checks)


def preflight_message(checks: list[DeviceCheck], worst: DeviceCheck) -> str:
    h, words = memory.human_bytes, VERDICT_WORDS[worst.verdict]
    if len(checks) == 1:
        trial = f" (measured trial peak {h(worst.measured_peak)})" if worst.measured_peak else ""
        return f"predicted peak {h(worst.predicted_peak)} of {h(worst.available)} available on {worst.device}: {words}{trial}"
    each = ", ".join(f"{c.device} {h(c.predicted_peak)} of {h(c.available)}" for c in checks)
    return f"predicted peak per device: {each}: {words} (tightest: {worst.device})"


def device_kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"
