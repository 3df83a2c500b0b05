"""The third benchmark set: built from WordNet's own file format, and the committed copy
is what the engine reads."""

import json

from benchmarks.word_definitions import OUT, ROWS, rows

LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by\n"


def write_wordnet(folder):
    (folder / "index.noun").write_text(
        LICENCE
        + "dog n 2 3 @ ~ #m 2 1 02084071 10114209  \n"  # tagged: its first sense is kept
        + "zorilla n 1 1 @ 1 0 02441664  \n"  # no tagged sense: rare, dropped
        + "Paris n 1 1 @ 1 1 08932568  \n",  # a name, not a word: dropped
        encoding="utf-8")
    (folder / "data.noun").write_text(
        LICENCE
        + '02084071 05 n 01 dog 0 001 @ 02083346 n 0000 | a member of the genus Canis that has been '
          'domesticated by man since prehistoric times; "the dog barked all night"  \n'
        + "10114209 18 n 01 dog 0 000 | a dull unattractive unpleasant girl or woman  \n"
        + "02441664 05 n 01 zorilla 0 000 | muishond of northern Africa  \n"
        + "08932568 15 n 01 Paris 0 000 | the capital and largest city of France  \n",
        encoding="utf-8")
    for pos in ("verb", "adj", "adv"):
        (folder / f"index.{pos}").write_text(LICENCE, encoding="utf-8")
        (folder / f"data.{pos}").write_text(LICENCE, encoding="utf-8")


def test_each_common_word_gets_its_most_frequent_sense_without_the_examples(tmp_path):
    write_wordnet(tmp_path)
    assert rows(tmp_path) == [{"instruction": "Define the word 'dog' (noun).", "input": "",
                               "output": "a member of the genus Canis that has been domesticated by man "
                                         "since prehistoric times"}]


def test_the_committed_set_is_what_the_engine_trains_on(tmp_path):
    from xgblora_engine.data.formats import detect_format
    from xgblora_engine.data.readers import read_rows

    lines = OUT.read_text(encoding="utf-8").splitlines()
    assert len(lines) == ROWS
    first = json.loads(lines[0])
    assert first["instruction"].startswith("Define the word '") and first["output"]
    assert len(read_rows(str(OUT))) == ROWS
    assert detect_format(read_rows(str(OUT), limit=50)).format == "alpaca"
