"""Publishing an export on the Hugging Face Hub (`xgblora export --push REPO`, the Export
panel's Push): the verified export folders, model card included, into a repository that
is private unless asked otherwise.

One format goes to the repository's root; several go to one sub-folder each (``hf/``,
``gguf/``…), so a merged model and its GGUF can share a repository. The export on disk
is never touched: a push that fails (no token, no network) is reported beside the
exports, which stay as they are, and can be pushed again later.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from xgblora_engine.export.common import Check, ExportResult

REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
NOT_LOGGED_IN = ("not logged in to the Hugging Face Hub, so nothing was pushed",
                 "run `hf auth login` (or set HF_TOKEN) and push again with `xgblora export RUN --push REPO`")


def check_repo_id(repo_id: str) -> None:
    from xgblora_engine.errors import UserError

    if not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise UserError(f"invalid Hub repository name '{repo_id}'",
                        "use NAME or OWNER/NAME: letters, digits, '-', '_' and '.', e.g. me/smollm2-unicode")


def push_export(results: list[ExportResult], repo_id: str, private: bool = True, api=None,
                log: Callable[[str], None] = lambda text: None) -> ExportResult:
    """Upload the verified exports of ``results``; the push's own result (format "hub")."""
    folders = {r.format: Path(r.path) for r in results if r.ok}
    if not folders:
        return _failed(repo_id, "nothing was pushed: no export was verified", "fix the failed export first")
    api = api if api is not None else _hub_api()
    if api is None:
        return _failed(repo_id, *NOT_LOGGED_IN)
    try:
        url = str(api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
        for fmt, folder in folders.items():
            log(f"pushing {folder} to {repo_id}" + ("" if len(folders) == 1 else f"/{fmt}"))
            api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                              path_in_repo=None if len(folders) == 1 else fmt,
                              commit_message=f"XGBLoRA export: {fmt}")
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes a message; the export stays
        return _failed(repo_id, *_explain(exc))
    where = "private" if private else "public"
    checks = [Check(f"uploaded {fmt}", True, str(folder)) for fmt, folder in folders.items()]
    return ExportResult("hub", url, True, checks, message=f"pushed to {url} ({where})",
                        command=f"hf download {repo_id}")


def _hub_api():
    """The Hub client with the user's token, or None when there is no token."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    return HfApi(token=token) if token else None


def _explain(exc: Exception) -> tuple[str, str]:
    text = f"{type(exc).__name__}: {exc}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403) or "401" in text or "403" in text:
        return (f"the Hub refused the push ({status or 'not authorised'}): the token cannot write to that repository",
                "log in with a token that has write access (`hf auth login`), or push to your own namespace")
    if "offline" in text.lower() or "connect" in text.lower() or "resolve" in text.lower():
        return ("the Hugging Face Hub cannot be reached, so nothing was pushed",
                "check the network (and that HF_HUB_OFFLINE is not set), then push again: the export is kept")
    return f"the push to the Hub failed: {text.splitlines()[0][:300]}", "the export is kept; push it again later"


def _failed(repo_id: str, message: str, hint: str) -> ExportResult:
    return ExportResult("hub", repo_id, False, [Check("push", False, hint)], message=f"{message}; {hint}")
