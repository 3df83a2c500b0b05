"""Models already in the Hugging Face cache, found by reading the cache folder (no
huggingface_hub import: the list must appear instantly and offline)."""

from __future__ import annotations

import os
from pathlib import Path


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_models(cache: Path | None = None) -> list[str]:
    """Repo ids ("owner/name") of cached models that have at least one snapshot."""
    cache = cache or hub_cache_dir()
    if not cache.is_dir():
        return []
    found = []
    for folder in cache.glob("models--*"):
        snapshots = folder / "snapshots"
        if snapshots.is_dir() and any(snapshots.iterdir()):
            found.append(folder.name[len("models--"):].replace("--", "/"))
    return sorted(found, key=str.lower)
