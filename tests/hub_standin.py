"""A local stand-in for the Hugging Face Hub's HTTP API: the few routes a model download
uses (repository info, its file tree, and each file), served from folders on disk over
real HTTP, so the real ``huggingface_hub`` client runs unchanged and no test needs the
network. ``seconds_per_mb`` slows the files down and ``one_at_a_time`` serves them in turn,
so that a download can be stopped half way."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 1 << 20


class HubStandIn:
    def __init__(self, repos: dict[str, Path], seconds_per_mb: float = 0.0, one_at_a_time: bool = False) -> None:
        self.repos, self.seconds_per_mb = repos, seconds_per_mb
        self.turn = threading.Lock() if one_at_a_time else contextlib.nullcontext()
        self.requests: list[str] = []  # "GET /path", in order
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
                hub.answer(self, with_body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub.answer(self, with_body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def env(self, cache: Path) -> dict[str, str]:
        """What a process needs to download from here into ``cache``."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}

    def files_fetched(self, repo_id: str) -> set[str]:
        prefix = f"GET /{repo_id}/resolve/{COMMIT}/"
        return {r[len(prefix):] for r in self.requests if r.startswith(prefix)}

    def answer(self, handler: BaseHTTPRequestHandler, with_body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        for repo_id, folder in self.repos.items():
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            if path.startswith((f"/api/models/{repo_id}/revision/", f"/api/models/{repo_id}?")) \
                    or path == f"/api/models/{repo_id}":
                return _json(handler, {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]})
            if path.startswith(f"/api/models/{repo_id}/tree/"):
                return _json(handler, [{"type": "file", "path": f, "size": (folder / f).stat().st_size,
                                        "oid": _sha1(folder / f)} for f in files])
            resolve = f"/{repo_id}/resolve/"
            if path.startswith(resolve):
                name = path[len(resolve):].split("/", 1)[1]
                if name in files:
                    return self._file(handler, folder / name, with_body)
        handler.send_response(404)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _file(self, handler: BaseHTTPRequestHandler, path: Path, with_body: bool) -> None:
        data = path.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("ETag", f'"{_sha1(path)}"')
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.end_headers()
        if not with_body:
            return
        with self.turn:
            try:
                for start in range(0, len(data), CHUNK):
                    handler.wfile.write(data[start:start + CHUNK])
                    time.sleep(self.seconds_per_mb * len(data[start:start + CHUNK]) / CHUNK)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped
                pass


def _json(handler: BaseHTTPRequestHandler, obj) -> None:
    data = json.dumps(obj).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()
