"""Entry point of `xgblora-studio` and `python -m xgblora_app`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import multiprocessing

    # In a frozen bundle the worker is spawned by re-running this executable: this call
    # turns such a re-run into the worker instead of a second window. No-op otherwise.
    multiprocessing.freeze_support()
    if problem := no_display() or missing_display_library():
        print(f"xgblora-studio: {problem}", file=sys.stderr)
        return 2
    from xgblora_app.main_window import run_app

    return run_app(sys.argv if argv is None else argv)


# The X11 libraries Qt's xcb plugin (6.5+) loads, and the Debian/Ubuntu package of each.
XCB_LIBRARIES = {"xcb-cursor": "libxcb-cursor0", "xcb-icccm": "libxcb-icccm4", "xcb-keysyms": "libxcb-keysyms1",
                 "xcb-image": "libxcb-image0", "xcb-render-util": "libxcb-render-util0",
                 "xkbcommon-x11": "libxkbcommon-x11-0", "xcb-shape": "libxcb-shape0", "xcb-xkb": "libxcb-xkb1"}


def no_display() -> str | None:
    """On Linux with neither DISPLAY nor WAYLAND_DISPLAY (an SSH session, a server), Qt
    aborts with "could not connect to display" and advice to reinstall. Say what is wrong."""
    import os

    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "xcb") not in ("xcb", "wayland"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return ("there is no display to open the window on: neither DISPLAY nor WAYLAND_DISPLAY is set. "
            "Start it from a desktop session (over SSH: ssh -X); on a machine without one, the "
            "engine does everything from the command line (xgblora train --help).")


def missing_display_library() -> str | None:
    """Some Linux desktops lack a library Qt's X11 plugin needs; Qt then aborts with a
    message that names the wrong one. Say which packages to install instead."""
    import os

    on_x11 = sys.platform.startswith("linux") and os.environ.get("DISPLAY") and \
        os.environ.get("QT_QPA_PLATFORM", "xcb") == "xcb"
    if not on_x11 or (installed := _shared_libraries()) is None:
        return None
    missing = [pkg for lib, pkg in XCB_LIBRARIES.items() if f"lib{lib}.so" not in installed]
    if not missing:
        return None
    return (f"Qt cannot open a window on X11 without these libraries: {', '.join(missing)}. "
            f"Install them (Debian, Ubuntu: sudo apt install {' '.join(missing)}), then start again.")


def _shared_libraries() -> str | None:
    """The linker cache's list, read once (``ctypes.util.find_library`` runs ldconfig per
    library); None where it cannot be read, and then nothing is checked."""
    import subprocess

    try:
        return subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
