"""The worker starts and ends cleanly on POSIX and on Windows, tested here with stand-ins
for the platform's process functions."""

import os
import signal

import pytest

from xgblora_engine import worker as W


class FakeProcess:
    pid = 4242

    def __init__(self):
        self.calls = []

    def terminate(self):
        self.calls.append("terminate")

    def kill(self):
        self.calls.append("kill")


def windows(monkeypatch):
    """What os and signal lack on Windows."""
    for name in ("setsid", "killpg", "getpgid"):
        monkeypatch.delattr(os, name, raising=False)
    monkeypatch.delattr(signal, "SIGKILL", raising=False)


def test_on_windows_the_worker_starts_without_a_process_group(monkeypatch):
    windows(monkeypatch)
    assert W.own_process_group() is False  # no AttributeError


def test_on_windows_the_worker_is_ended_by_its_handle(monkeypatch):
    windows(monkeypatch)
    process = FakeProcess()
    W.end_process(process, force=False)
    W.end_process(process, force=True)
    assert process.calls == ["terminate", "kill"]


def test_on_posix_the_worker_leads_its_own_group_and_is_ended_with_it(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "setsid", lambda: calls.append("setsid"), raising=False)
    monkeypatch.setattr(os, "killpg", lambda pid, sig: calls.append((pid, sig)), raising=False)
    assert W.own_process_group() is True
    process = FakeProcess()
    W.end_process(process, force=False)
    W.end_process(process, force=True)
    assert calls == ["setsid", (4242, signal.SIGTERM), (4242, getattr(signal, "SIGKILL", 9))]
    assert process.calls == []


def test_on_posix_a_group_already_led_is_kept_and_a_vanished_group_falls_back(monkeypatch):
    def refuse():
        raise PermissionError("already a process group leader")

    def gone(pid, sig):
        raise ProcessLookupError

    monkeypatch.setattr(os, "setsid", refuse, raising=False)
    monkeypatch.setattr(os, "killpg", gone, raising=False)
    assert W.own_process_group() is False
    process = FakeProcess()
    W.end_process(process, force=True)
    assert process.calls == ["kill"]


@pytest.mark.skipif(os.name != "posix", reason="a real process group exists on POSIX only")
def test_a_real_worker_is_ended_by_close(tmp_path):
    client = W.WorkerClient()
    client.start()
    client.close(timeout=30)
    assert not client.is_alive()
