"""Hub downloads with progress and Stop, through the real huggingface_hub client against a
local stand-in for the Hub's HTTP API (no network)."""

import pytest

from tests.engine.conftest import save_tiny_model
from tests.hub_standin import HubStandIn
from xgblora_engine.errors import UserError
from xgblora_engine.models.download import ensure_downloaded, files_to_fetch
from xgblora_engine.models.hub import cached_snapshot


def test_only_what_loading_reads_is_fetched():
    repo = ["config.json", "tokenizer.json", "tokenizer.model", "chat_template.jinja", "README.md",
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
            "model.safetensors.index.json", "pytorch_model.bin", "model.gguf", "onnx/model.onnx",
            "original/consolidated.00.pth", "flax_model.msgpack"]
    assert files_to_fetch(repo) == ["config.json", "tokenizer.json", "tokenizer.model", "chat_template.jinja",
                                    "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                                    "model-00002-of-00002.safetensors"]
    assert files_to_fetch(["config.json", "pytorch_model.bin", "training_args.bin"]) == \
        ["config.json", "pytorch_model.bin"]


@pytest.fixture
def hub(tmp_path, tiny_llama, monkeypatch, request):
    """The stand-in serving a tiny model (plus files loading never reads), and this
    process's huggingface_hub pointed at it and at an empty cache."""
    from huggingface_hub import constants

    folder = save_tiny_model(tmp_path / "repo", tiny_llama)
    (folder / "model.safetensors").unlink()
    tiny_llama.save_pretrained(folder, max_shard_size="100KB")  # shards and an index, as big models have
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"\0" * 1000)
    server = HubStandIn({"me/tiny": folder}, seconds_per_mb=10)  # a second a shard: time to stop
    request.addfinalizer(server.close)
    for key, value in server.env(tmp_path / "cache").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return server


def test_a_download_reports_its_bytes_and_lands_in_the_cache(hub):
    reports = []
    ensure_downloaded("me/tiny", lambda *r: reports.append(r), lambda: False)
    folder = cached_snapshot("me/tiny", need_weights=True)
    assert folder is not None and (folder / "config.json").is_file()
    fetched = hub.files_fetched("me/tiny")
    assert "onnx/model.onnx" not in fetched and "model.safetensors.index.json" in fetched
    done, total, rate = reports[-1]
    assert done == total == sum(p.stat().st_size for p in folder.iterdir()) and rate > 0
    assert all(r[1] == total for r in reports)  # known from the first report on
    assert [r[0] for r in reports] == sorted(r[0] for r in reports)  # only ever forward
    asked = len(hub.requests)
    ensure_downloaded("me/tiny", lambda *r: None, lambda: False)
    assert len(hub.requests) == asked  # cached: no request at all


def test_a_stop_ends_the_download_and_starting_again_finishes_it(hub):
    reports = []
    with pytest.raises(UserError, match="download of 'me/tiny' was stopped") as stopped:
        ensure_downloaded("me/tiny", lambda *r: reports.append(r), lambda: len(reports) >= 1)
    assert "continue" in stopped.value.hint
    assert cached_snapshot("me/tiny", need_weights=True) is None  # a shard is missing
    ensure_downloaded("me/tiny", lambda *r: None, lambda: False)
    folder = cached_snapshot("me/tiny", need_weights=True)
    assert folder is not None and len(list(folder.glob("model-*.safetensors"))) >= 2


def test_an_unknown_repository_is_named(hub):
    with pytest.raises(UserError, match="unknown model 'me/none'"):
        ensure_downloaded("me/none", lambda *r: None, lambda: False)
