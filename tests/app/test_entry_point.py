"""`xgblora-studio` on a Linux desktop that lacks a library Qt's X11 plugin needs says which
packages to install, and with no display at all says so, instead of letting Qt abort."""

from xgblora_app import __main__ as entry


def test_a_missing_x11_library_is_named_with_its_package(monkeypatch):
    monkeypatch.setattr(entry.sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    listing = "\n".join(f"lib{lib}.so.0 => /lib/lib{lib}.so.0" for lib in entry.XCB_LIBRARIES if lib != "xcb-icccm")
    monkeypatch.setattr(entry, "_shared_libraries", lambda: listing)
    message = entry.missing_display_library()
    assert "libxcb-icccm4" in message and "sudo apt install libxcb-icccm4" in message
    assert "libxcb-cursor0" not in message
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # no X11 window: nothing to check
    assert entry.missing_display_library() is None


def test_no_display_at_all_is_said_plainly(monkeypatch, capsys):
    monkeypatch.setattr(entry.sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert entry.main([]) == 2
    err = capsys.readouterr().err
    assert "neither DISPLAY nor WAYLAND_DISPLAY is set" in err and "xgblora train --help" in err
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert entry.no_display() is None
    monkeypatch.delenv("WAYLAND_DISPLAY")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # the tests' own way: no window needed
    assert entry.no_display() is None
