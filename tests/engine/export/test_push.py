"""Pushing exports to the Hub: against a local stand-in for the Hub API (no network), and
the real client offline for the message a user without network gets."""

import shutil
from pathlib import Path

import pytest

from xgblora_engine.cli import main
from xgblora_engine.errors import UserError
from xgblora_engine.export import export_run


class LocalHub:
    """The two HfApi calls a push makes, writing into a folder instead of huggingface.co."""

    def __init__(self, root: Path, fail: Exception | None = None) -> None:
        self.root, self.fail, self.repos = root, fail, {}

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
        if self.fail is not None:
            raise self.fail
        assert repo_type == "model" and exist_ok
        self.repos[repo_id] = {"private": private}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, repo_type=None, path_in_repo=None, commit_message=None):
        assert repo_id in self.repos, "uploaded before the repository was made"
        shutil.copytree(folder_path, self.root / repo_id / (path_in_repo or ""), dirs_exist_ok=True)


def test_a_push_uploads_every_verified_format_privately_with_its_card(tiny_run, tmp_path):
    hub = LocalHub(tmp_path / "hub")
    results = export_run(tiny_run, formats="hf,peft", push_to="me/tiny-xgb", hub_api=hub)
    assert [r.format for r in results] == ["hf", "peft", "hub"] and all(r.ok for r in results)
    pushed = results[-1]
    assert pushed.path == "https://huggingface.co/me/tiny-xgb" and "(private)" in pushed.message
    assert pushed.command == "hf download me/tiny-xgb" and hub.repos["me/tiny-xgb"] == {"private": True}
    repo = tmp_path / "hub" / "me" / "tiny-xgb"
    assert (repo / "hf" / "config.json").is_file() and (repo / "peft" / "adapter_config.json").is_file()
    card = (repo / "hf" / "README.md").read_text()
    assert card.startswith("---") and "license: other" in card.split("---")[1]  # a local base: see its card
    assert Path(results[0].path, "config.json").is_file()  # the export on disk is as it was


def test_one_format_goes_to_the_root_and_public_when_asked(tiny_run, tmp_path):
    hub = LocalHub(tmp_path / "hub")
    results = export_run(tiny_run, formats="hf", push_to="tiny-xgb", public=True, hub_api=hub, verify=False)
    assert results[-1].ok and hub.repos["tiny-xgb"] == {"private": False}
    assert (tmp_path / "hub" / "tiny-xgb" / "config.json").is_file()


def test_a_failed_push_keeps_the_export_and_says_what_to_do(tiny_run, tmp_path):
    hub = LocalHub(tmp_path / "hub", fail=ConnectionError("Failed to resolve 'huggingface.co'"))
    results = export_run(tiny_run, formats="hf", push_to="me/x", hub_api=hub, verify=False)
    hf, pushed = results
    assert hf.ok and Path(hf.path, "config.json").is_file()
    assert not pushed.ok and "cannot be reached" in pushed.message and "the export is kept" in pushed.message


def test_without_a_token_nothing_is_pushed_and_the_login_is_named(tiny_run, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    pushed = export_run(tiny_run, formats="hf", push_to="me/x", verify=False)[-1]
    assert not pushed.ok and "not logged in" in pushed.message and "hf auth login" in pushed.message


def test_the_real_client_offline_gives_the_network_message(tiny_run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pushed = export_run(tiny_run, formats="hf", push_to="me/x", verify=False)[-1]
    assert not pushed.ok and "cannot be reached" in pushed.message


@pytest.mark.parametrize("repo", ["me/", "a/b/c", "bad name", "me/x.git", "../x"])
def test_a_bad_repository_name_is_refused_before_anything_is_written(tiny_run, repo):
    with pytest.raises(UserError, match="invalid Hub repository name"):
        export_run(tiny_run, formats="hf", push_to=repo)
    assert not (tiny_run / "exports").exists()


def test_cli_push_failure_exits_1_with_the_reason(tiny_run, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["export", str(tiny_run), "--no-verify", "--push", "me/x"]) == 1
    out = capsys.readouterr().out
    assert "hf: OK" in out and "hub: FAILED me/x" in out and "not logged in" in out
