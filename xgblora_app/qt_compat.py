"""Which Qt bindings the app can run on.

PySide6 6.12.0 on Python ≤ 3.11 drops one reference to ``None`` each time C++ calls a
Python override of a void virtual (``paint``, ``paintEvent``…), and one to ``True`` on
some bool-returning ones. pyqtgraph overrides ``paint`` on every plot item, so a live
plot makes thousands of such calls a minute and the interpreter aborts with
"none_dealloc: deallocating None" once a count reaches zero. Measured here: -2 per
``paint`` call of a QGraphicsItem subclass, -1 per ``paintEvent``; 6.11.3 leaks nothing.
Python 3.12 made these objects immortal (PEP 683) and is unaffected.

pyproject.toml excludes the leaking release; this module refuses to start on it (when
installed by other means) with the command that fixes it, rather than crash later.
"""

from __future__ import annotations

import sys

# (version, first Python that is unaffected)
LEAKING = {"6.12.0": (3, 12)}


def binding_problem(version: str | None = None, python: tuple[int, int] | None = None) -> str | None:
    """Why the installed PySide6 cannot run the app, or None when it can."""
    if version is None:
        import PySide6

        version = PySide6.__version__
    python = python or sys.version_info[:2]
    fixed_from = LEAKING.get(version)
    if fixed_from is None or python >= fixed_from:
        return None
    return (f"PySide6 {version} on Python {python[0]}.{python[1]} leaks references to None with every "
            "repaint, which crashes the app within minutes; install another release with "
            f"`pip install 'PySide6-Essentials!={version}'` (or use Python "
            f"{fixed_from[0]}.{fixed_from[1]}+)")
