"""The bundled sample datasets, built from text the Python standard library carries.

* ``python-topics`` (default): instruction following. Questions about Python language
  topics, built-in functions, methods of the core types and the ``math`` module,
  answered with the first sentences of their official documentation (pydoc topics and
  docstrings), kept short so most examples fit in 128 tokens.
* ``unicode-names``: a checkable answer. "What is the Unicode name of the character 'é'?"
  -> "LATIN SMALL LETTER E WITH ACUTE".

Built in memory and deterministically (the same rows on every machine with the same
Python minor version), so the sample works even where the resources/ folder is not
shipped; ``resources/datasets/*.jsonl`` hold copies for users to see the format.
"""

from __future__ import annotations

import builtins
import math
import random
import re
import unicodedata

from xgblora_engine.errors import UserError

MAX_WORDS = 50  # a longer first sentence drops the example rather than cutting it mid-way
MIN_WORDS = 6
CORE_TYPES = (str, list, dict, set, frozenset, tuple, bytes, int, float)


def sample_names() -> tuple[str, ...]:
    return tuple(BUILDERS)


def sample_rows(name: str = "python-topics") -> list[dict[str, str]]:
    if name not in BUILDERS:
        raise UserError(f"unknown sample dataset '{name}'",
                        f"choose one of: {', '.join('sample:' + n for n in BUILDERS)}")
    return BUILDERS[name]()


# --- python-topics ---------------------------------------------------------------------

def python_topics() -> list[dict[str, str]]:
    rows = _topic_rows() + _callable_rows()
    return [{"instruction": q, "input": "", "output": a} for q, a in rows]


def _topic_rows() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    rows, seen = [], set()
    for key in sorted(topics):
        lines = topics[key].splitlines()
        title = lines[0].strip()
        answer = first_sentences("\n".join(lines[2:]))  # lines[1] underlines the title
        if title not in seen and answer:
            seen.add(title)
            rows.append((f"Briefly explain the Python topic: {title}.", answer))
    return rows


def _callable_rows() -> list[tuple[str, str]]:
    rows = []
    for prefix, owner, names in _documented_callables():
        for name in names:
            answer = first_sentences(getattr(owner, name).__doc__ or "")
            if answer:
                rows.append((f"What does `{prefix}{name}` do in Python?", answer))
    return rows


def _documented_callables():
    def public(obj) -> list[str]:
        return sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n)))

    functions = [n for n in public(builtins)
                 if not isinstance(getattr(builtins, n), type) or n in _BUILTIN_TYPES]
    yield "", builtins, functions
    for owner in CORE_TYPES:
        yield f"{owner.__name__}.", owner, public(owner)
    yield "math.", math, public(math)


# classes that read as functions in everyday code; exception classes are left out
_BUILTIN_TYPES = {"bool", "bytearray", "bytes", "dict", "enumerate", "filter", "float", "frozenset",
                  "int", "list", "map", "memoryview", "object", "property", "range", "reversed", "set",
                  "slice", "str", "tuple", "type", "zip"}


def first_sentences(text: str) -> str:
    """Whole sentences of the opening prose, up to MAX_WORDS words; '' if too short or long."""
    words: list[str] = []
    for sentence in _sentences(_prose(text)):
        if words and len(words) + len(sentence.split()) > MAX_WORDS:
            break
        words += sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return ""
    return " ".join(words)


def _prose(text: str) -> str:
    """The prose paragraphs before the first one that needs code to make sense.

    pydoc text indents code, grammar and signatures; a paragraph that introduces code
    ("... is equivalent to:") ends the answer, with its colon turned into a full stop."""
    kept = []
    for paragraph in re.split(r"\n\s*\n", text):
        if not paragraph.strip():
            continue
        if not _is_prose(paragraph):
            if kept:
                break
            continue
        line = " ".join(paragraph.split())
        if line.endswith(":"):
            kept.append(_drop_code_intro(line, first=not kept))
            break
        if line[-1] not in ".!?)\"":  # a sentence the following code block completes
            break
        kept.append(line)
    return " ".join(k for k in kept if k)


def _drop_code_intro(line: str, first: bool) -> str:
    """A paragraph ending in ':' introduces code: drop that last sentence, unless it is
    the answer's only sentence, where 'X is used to ...:' still reads well as 'X ... .'."""
    sentences = _sentences(line)
    if len(sentences) > 1:
        return " ".join(sentences[:-1])
    return line[:-1] + "." if first else ""


def _is_prose(paragraph: str) -> bool:
    first = paragraph.splitlines()[0]
    if first.startswith((" ", "*", "=", "-", "(", "+", "|")) or "::=" in paragraph or ">>>" in paragraph:
        return False
    if re.match(r"^[\w.]+\(.*\)( -+> .*)?", first):  # a signature line of a docstring
        return False
    return len(paragraph.split()) >= 4


def _sentences(prose: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"*])", prose) if s]


# --- unicode-names ---------------------------------------------------------------------

UNICODE_RANGES = [(0x00C0, 0x017F), (0x0391, 0x03C9), (0x0410, 0x044F), (0x2190, 0x21FF),
                  (0x2200, 0x22FF), (0x2600, 0x26FF), (0x20A0, 0x20BF)]


def unicode_names(n: int = 400, seed: int = 0) -> list[dict[str, str]]:
    chars = [chr(c) for lo, hi in UNICODE_RANGES for c in range(lo, hi + 1) if unicodedata.name(chr(c), "")]
    random.Random(seed).shuffle(chars)
    return [{"instruction": f"What is the Unicode name of the character '{c}'?", "input": "",
             "output": unicodedata.name(c)} for c in chars[:n]]


BUILDERS = {"python-topics": python_topics, "unicode-names": unicode_names}
