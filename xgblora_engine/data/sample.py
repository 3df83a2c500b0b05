"""The bundled sample datasets, built from text the Python standard library carries.

* ``python-topics`` (default): instruction following. Questions about Python language
  topics, built-in functions and methods of the core types, answered with the first
  sentences of their official documentation (pydoc topics and docstrings).
* ``unicode-names``: a checkable answer. "What is the Unicode name of 'é'?" →
  "LATIN SMALL LETTER E WITH ACUTE".

Built in memory and deterministically (same rows on every machine with the same Python
minor version), so the sample works even where the resources/ folder is not shipped;
``resources/datasets/*.jsonl`` hold copies for users to see the format.
"""

from __future__ import annotations

import builtins
import random
import re
import unicodedata

MAX_WORDS = 45


def sample_rows(name: str = "python-topics") -> list[dict[str, str]]:
    builders = {"python-topics": python_topics, "unicode-names": unicode_names}
    if name not in builders:
        from xgblora_engine.errors import UserError

        raise UserError(f"unknown sample dataset '{name}'", f"choose one of: {', '.join(builders)}")
    return builders[name]()


def _first_sentences(text: str) -> str:
    """Whole sentences of the first prose paragraph(s), up to about MAX_WORDS words."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    prose = " ".join(" ".join(p for p in paragraphs if _is_prose(p)).split())
    kept: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"*])", prose):
        if kept and len(" ".join(kept + [sentence]).split()) > MAX_WORDS:
            break
        kept.append(sentence)
    return " ".join(kept)


def _is_prose(paragraph: str) -> bool:
    if paragraph.startswith((" ", "*", "=", "-")) or "::=" in paragraph:
        return False
    if re.match(r"^[\w.]+\(.*\)( -> .*)?$", paragraph.splitlines()[0]):  # a signature line
        return False
    return len(paragraph.split()) >= 6


def python_topics() -> list[dict[str, str]]:
    from pydoc_data.topics import topics

    rows = []
    for key in sorted(topics):
        title = topics[key].splitlines()[0].strip()
        answer = _first_sentences("\n".join(topics[key].splitlines()[2:]))
        if len(answer.split()) >= 8:
            rows.append({"instruction": f"Explain the Python topic: {title}.", "input": "", "output": answer})
    for owner, names in _documented_callables():
        for name in names:
            obj = getattr(owner, name)
            answer = _first_sentences(obj.__doc__ or "")
            if len(answer.split()) >= 6:
                qualified = name if owner is builtins else f"{owner.__name__}.{name}"
                rows.append({"instruction": f"What does `{qualified}` do in Python?", "input": "", "output": answer})
    return rows


def _documented_callables():
    public = lambda obj: sorted(n for n in dir(obj) if not n.startswith("_"))  # noqa: E731
    yield builtins, [n for n in public(builtins) if callable(getattr(builtins, n))
                     and not n.endswith(("Error", "Warning", "Exception")) and getattr(builtins, n).__doc__]
    for owner in (str, list, dict, set, bytes, int, float, tuple, frozenset):
        yield owner, public(owner)


def unicode_names(n: int = 400, seed: int = 0) -> list[dict[str, str]]:
    ranges = [(0x00C0, 0x017F), (0x0391, 0x03C9), (0x0410, 0x044F), (0x2190, 0x21FF), (0x2200, 0x22FF),
              (0x2600, 0x26FF), (0x20A0, 0x20BF)]
    chars = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1) if unicodedata.name(chr(c), "")]
    random.Random(seed).shuffle(chars)
    return [{"instruction": f"What is the Unicode name of the character '{c}'?", "input": "",
             "output": unicodedata.name(c)} for c in chars[:n]]
