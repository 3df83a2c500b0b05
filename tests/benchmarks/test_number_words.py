"""The fourth benchmark set: its rules are right, and the committed copy is what the script
builds and what the engine reads."""

import json

import pytest

from benchmarks.number_words import OUT, ROWS, ordinal, roman, rows, words


@pytest.mark.parametrize(("n", "expected"), [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (21, "twenty-one"), (100, "one hundred"),
    (115, "one hundred fifteen"), (1001, "one thousand one"), (20000, "twenty thousand"),
    (4821, "four thousand eight hundred twenty-one"),
    (999999, "nine hundred ninety-nine thousand nine hundred ninety-nine"),
])
def test_numbers_in_words(n, expected):
    assert words(n) == expected


def test_ordinals_and_roman_numerals():
    assert [ordinal(d) for d in (1, 3, 12, 20, 22, 30, 31)] == [
        "first", "third", "twelfth", "twentieth", "twenty-second", "thirtieth", "thirty-first"]
    assert [roman(n) for n in (4, 14, 1987, 3999)] == ["IV", "XIV", "MCMLXXXVII", "MMMCMXCIX"]


def test_the_committed_set_is_the_built_one_and_the_engine_reads_it():
    from xgblora_engine.data.formats import detect_format
    from xgblora_engine.data.readers import read_rows

    committed = [json.loads(line) for line in OUT.read_text(encoding="utf-8").splitlines()]
    assert committed == rows() and len(committed) == ROWS
    assert len({r["instruction"].split()[1] for r in committed}) > 1000  # not a few repeated items
    assert detect_format(read_rows(str(OUT), limit=50)).format == "alpaca"
