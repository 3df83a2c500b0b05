"""Bytes as people write and read them (no torch, no Qt: the app formats with this too)."""

from __future__ import annotations

import re

from xgblora_engine.errors import UserError


def human_bytes(n: int | float | None) -> str:
    """'812 MB', '1.52 GB': whole numbers up to megabytes, two decimals above."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TB"


def transfer_text(done: int, total: int, bytes_per_s: float) -> str:
    """'120 MB of 724 MB (17 %) at 11 MB/s': a download, in the CLI and the window."""
    share = f" ({100 * done / total:.0f} %)" if total else ""
    return f"{human_bytes(done)} of {human_bytes(total) if total else '?'}{share} at {human_bytes(bytes_per_s)}/s"


def parse_size(text: str) -> int:
    """'6GB', '512 MiB', '1.5g' -> bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise UserError(f"cannot read the memory size '{text}'", "write it like 6GB or 512MB")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def summary(parts: dict[str, int]) -> str:
    """'weights 512 MB, logits 96 MB': an estimate's parts on one line."""
    return ", ".join(f"{name} {human_bytes(size)}" for name, size in parts.items())
