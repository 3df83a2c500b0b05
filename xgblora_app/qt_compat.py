"""Work-arounds for the Qt bindings in use.

PySide6 6.12.0 on Python ≤ 3.11 drops one reference to ``None`` each time C++ calls a
Python override of a void virtual (``paint``, ``paintEvent``…), and one to ``True`` on
some bool-returning ones. pyqtgraph overrides ``paint`` on every plot item, so a live
plot makes thousands of such calls a minute and the interpreter aborts with
"none_dealloc: deallocating None" (or "bool_dealloc") once a count reaches zero.
Measured here: -1 per ``paint`` call on a bare QGraphicsItem subclass; ~-2000 None and
-56 True per relayout of the training plots. Python 3.12 made these objects immortal
(PEP 683) and is unaffected; on older versions we do the same by hand: give them a
reference count no leak can exhaust.
"""

from __future__ import annotations

import ctypes
import sys

_IMMORTAL = 1 << 60  # at a million leaked references a second this lasts 36 000 years


def immortalize_singletons() -> None:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    for obj in (None, True, False):
        # CPython ≤ 3.11: ob_refcnt is the first field of every object, at id(obj).
        refcnt = ctypes.c_ssize_t.from_address(id(obj))
        if refcnt.value < _IMMORTAL // 2:
            refcnt.value = _IMMORTAL
