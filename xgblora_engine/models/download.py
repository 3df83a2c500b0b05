"""A Hub model downloaded before it loads, with progress the app can show and a Stop
that cancels it.

Left to ``from_pretrained``, a first download prints tqdm bars to the worker's stderr,
where nobody sees them, and cannot be interrupted: the window would sit on "loading
model" for the minutes a multi-GB download takes. Here the same files are fetched with
``snapshot_download`` into the usual Hugging Face cache, reporting bytes and rate a few
times a second, and a Stop ends it at the next chunk. What is complete stays in the
cache and an interrupted file resumes, so starting again continues where it stopped.

Only what loading reads is fetched: the top-level config, tokenizer and template files
and one set of weights (safetensors when the repository has them, else PyTorch .bin), not
the GGUF, ONNX, TensorFlow or "original/" copies many repositories carry beside them.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import PurePosixPath

from xgblora_engine.errors import Stopped, UserError
from xgblora_engine.models.hub import cached_snapshot, hub_error, hub_offline, not_cached_error

SMALL_FILES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".py")  # config, tokenizer, template
REPORT_EVERY_S = 0.25

Report = Callable[[int, int, float], None]  # done bytes, total bytes, bytes per second


class DownloadStopped(Exception):
    """Raised inside the download's progress callback when a Stop arrives."""


def files_to_fetch(repo_files: list[str]) -> list[str]:
    """The files loading reads, from a repository's file list."""
    top = [f for f in repo_files if "/" not in f]
    safetensors = [f for f in top if f.endswith(".safetensors")]
    weights = safetensors or [f for f in top if f.endswith(".bin") and f.startswith("pytorch_model")]
    return [f for f in top if PurePosixPath(f).suffix in SMALL_FILES] + weights


def ensure_downloaded(repo_id: str, report: Report, should_stop: Callable[[], bool]) -> None:
    """Fetch ``repo_id`` into the cache unless it is there already (then: no network)."""
    if cached_snapshot(repo_id, need_weights=True) is not None:
        return
    if hub_offline():
        raise not_cached_error(repo_id, "HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi, snapshot_download, try_to_load_from_cache
    from huggingface_hub.hf_api import RepoFile

    try:
        sizes = {f.path: f.size for f in HfApi().list_repo_tree(repo_id, recursive=True) if isinstance(f, RepoFile)}
        wanted = files_to_fetch(list(sizes))
        # the total is known before any file starts, and files already cached count as done
        total = sum(sizes[f] for f in wanted)
        cached = sum(sizes[f] for f in wanted if isinstance(try_to_load_from_cache(repo_id, f), str))
        started = time.monotonic()
        snapshot_download(repo_id, repo_type="model", allow_patterns=wanted, tqdm_class=progress_bar_class(
            lambda done, rate: report(min(cached + done, total), total, rate), should_stop))
    except DownloadStopped:
        raise Stopped(f"the download of '{repo_id}' was stopped",
                        "start again (or Resume) to continue it: what is downloaded is kept "
                        "in the Hugging Face cache") from None
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - network and HTTP errors come from httpx or requests
        raise hub_error(repo_id, exc) from None
    report(total, total, (total - cached) / max(time.monotonic() - started, 1e-9))  # the last word: all there


def progress_bar_class(report: Callable[[int, float], None], should_stop: Callable[[], bool]):
    """A tqdm class for ``snapshot_download``: its byte bars call ``report(bytes done,
    bytes per second)`` at most every REPORT_EVERY_S, and any bar raises DownloadStopped
    once ``should_stop()`` (the download threads end at their next chunk)."""
    from tqdm.auto import tqdm

    # huggingface_hub keeps two byte bars (received, written) that both count every file
    seen = {"done": 0, "last": 0.0, "start": time.monotonic()}

    class ReportingBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)  # huggingface_hub's own bar option
            super().__init__(*args, **{**kwargs, "file": io.StringIO(), "disable": False})

        def update(self, n=1):
            if should_stop():
                raise DownloadStopped
            shown = super().update(n)
            if self.unit == "B":
                seen["done"] = max(seen["done"], int(self.n))
                now = time.monotonic()
                if now - seen["last"] >= REPORT_EVERY_S:
                    seen["last"] = now
                    report(seen["done"], seen["done"] / max(now - seen["start"], 1e-9))
            return shown

    return ReportingBar
