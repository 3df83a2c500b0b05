"""`xgblora-studio` on a Linux desktop that lacks a library Qt's X11 plugin needs says which
packages to install instead of letting Qt abort."""

import ctypes.util

from xgblora_app import __main__ as entry


def test_a_missing_x11_library_is_named_with_its_package(monkeypatch):
    monkeypatch.setattr(entry.sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name == "xcb-icccm" else f"lib{name}.so")
    message = entry.missing_display_library()
    assert "libxcb-icccm4" in message and "sudo apt install libxcb-icccm4" in message
    assert "libxcb-cursor0" not in message
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # no X11 window: nothing to check
    assert entry.missing_display_library() is None
