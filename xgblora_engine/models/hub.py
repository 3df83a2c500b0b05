"""Hugging Face Hub ids: the local cache first, the network only when it can answer.

transformers alone, offline and without ``HF_HUB_OFFLINE``, retries every file with
back-off for about 45 s before failing with a generic message. Here a cached id loads from
its snapshot folder with no network at all, and an uncached one costs a single metadata
request that tells "unknown id", "gated" and "Hub unreachable" apart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xgblora_engine.errors import UserError

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
TOKENIZER_PATTERNS = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "*.tiktoken")
PROBE_TIMEOUT_S = 10.0


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now, or as huggingface_hub read it at import."""
    from huggingface_hub import constants

    raw = os.environ.get("HF_HUB_OFFLINE", "")
    return raw.strip().lower() in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def cached_snapshot(repo_id: str, need_weights: bool) -> Path | None:
    """The cached snapshot folder of ``repo_id``, or None when it (or its weights) is not
    cached. Read from the cache's layout alone: a snapshot holding just what loading reads
    (see models/download.py) counts as complete."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):  # None: not cached; a sentinel object: known to be missing
        return None
    folder = Path(config).parent
    if need_weights and not (has_weights(folder) and has_tokenizer(folder)):
        return None  # e.g. a download stopped half way: it continues at the next start
    return folder


def has_tokenizer(folder: Path) -> bool:
    return any(any(folder.glob(p)) for p in TOKENIZER_PATTERNS)


def has_weights(folder: Path) -> bool:
    """Every shard a weight index names, or else any weight file."""
    for index in folder.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            return False
        return bool(shards) and all((folder / shard).is_file() for shard in shards)
    return any(any(folder.glob(p)) for p in WEIGHT_PATTERNS)


def hub_location(repo_id: str, need_weights: bool = True) -> str:
    """What to hand to ``from_pretrained``: the cached folder, or the id once the Hub has
    confirmed it exists. Raises UserError when neither is possible."""
    folder = cached_snapshot(repo_id, need_weights)
    if folder is not None:
        return str(folder)
    if hub_offline():
        raise not_cached_error(repo_id, "HF_HUB_OFFLINE is set")
    probe_hub(repo_id)
    return repo_id


def probe_hub(repo_id: str) -> None:
    """One metadata request (no retries) to tell why an uncached id cannot be used."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # network errors come from httpx/requests, whichever the hub uses
        raise hub_error(repo_id, exc) from None


def hub_error(repo_id: str, exc: Exception) -> UserError:
    """The user-facing reading of an exception raised while asking the Hub about ``repo_id``."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return UserError(f"model '{repo_id}' is gated on the Hugging Face Hub",
                         f"accept its terms at https://huggingface.co/{repo_id}, log in with "
                         "`hf auth login`, then try again; or pass a local folder or .gguf file")
    if isinstance(exc, RepositoryNotFoundError) or _status(exc) in (401, 404):
        return UserError(f"unknown model '{repo_id}': the Hugging Face Hub has no such model "
                         "(or it is private)",
                         "check the spelling of the id (owner/name), log in with `hf auth login` "
                         "for a private model, or pass a local folder or .gguf file")
    if isinstance(exc, HfHubHTTPError):
        return not_cached_error(repo_id, f"the Hub answered with an error ({_status(exc)})")
    return not_cached_error(repo_id, None)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def not_cached_error(repo_id: str, why: str | None) -> UserError:
    reason = f" ({why})" if why else ""
    return UserError(f"model '{repo_id}' is not in the local Hugging Face cache and the Hub "
                     f"cannot be reached{reason}",
                     f"download it once while online (`hf download {repo_id}`), "
                     "or pass a local folder or .gguf file")
