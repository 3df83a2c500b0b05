"""Build benchmarks/data/word-definitions.jsonl: a third data set for the comparisons,
larger than the bundled two and of another kind (everyday English, not Python or
Unicode), so a method is not judged only on what it was tuned on.

    "Define the word 'harbor' (noun)." -> "a sheltered port where ships can take on or discharge cargo"

Each word's most frequent sense (WordNet lists senses by their count in a tagged
corpus; only words with a tagged sense, so common ones, are kept), its gloss without
the example sentences. 3000 rows drawn with seed 0: 150 steps of batch 4 see each
training example at most once, where the bundled sets are seen 1.5 times.

Needs WordNet 3.0's database (Debian: ``apt-get install wordnet-base``); the output is
committed, so nothing else needs it.

    python -m benchmarks.word_definitions [--wordnet /usr/share/wordnet]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "word-definitions.jsonl"
POS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
ROWS = 3000
MIN_WORDS, MAX_WORDS = 3, 25


def first_senses(wordnet: Path, pos: str) -> dict[str, str]:
    """lemma -> the synset offset of its most frequent sense, for lemmas with a tagged sense."""
    senses = {}
    for line in (wordnet / f"index.{pos}").read_text(encoding="utf-8").splitlines():
        if line.startswith(" "):  # the licence header
            continue
        fields = line.split()
        lemma, n_pointers = fields[0], int(fields[3])
        tagged = int(fields[5 + n_pointers])
        if tagged >= 1 and lemma.isalpha() and lemma.islower() and len(lemma) >= 3:
            senses[lemma] = fields[6 + n_pointers]
    return senses


def glosses(wordnet: Path, pos: str) -> dict[str, str]:
    """synset offset -> its definition, the gloss before the quoted examples."""
    out = {}
    for line in (wordnet / f"data.{pos}").read_text(encoding="utf-8").splitlines():
        if line.startswith(" ") or " | " not in line:
            continue
        offset, gloss = line.split(" ", 1)[0], line.split(" | ", 1)[1]
        out[offset] = gloss.split('; "', 1)[0].split(' "', 1)[0].strip().rstrip(";").strip()
    return out


def rows(wordnet: Path) -> list[dict[str, str]]:
    found = []
    for pos, name in POS.items():
        defs = glosses(wordnet, pos)
        for lemma, offset in sorted(first_senses(wordnet, pos).items()):
            definition = defs.get(offset, "")
            if MIN_WORDS <= len(definition.split()) <= MAX_WORDS:
                found.append({"instruction": f"Define the word '{lemma}' ({name}).", "input": "",
                              "output": definition})
    random.Random(0).shuffle(found)
    return found[:ROWS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    args = parser.parse_args()
    data = rows(args.wordnet)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    print(f"{len(data)} rows -> {OUT}")


if __name__ == "__main__":
    main()
