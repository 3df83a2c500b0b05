"""Build benchmarks/data/iso-codes.jsonl: a fifth data set for the comparisons, built to
test the second decision on the default after the rule for it was written down
(benchmarks/results/default_rule.md); nothing was tuned on it. It asks for the names
behind the codes of ISO 3166 and 4217, in three forms:

    "What is the ISO 3166-2 subdivision 'AD-02'?" -> "Canillo, a parish of Andorra"
    "Give the ISO 3166-1 codes of Norway." -> "NO, NOR, 578"
    "Which currency has the ISO 4217 code 'JPY'?" -> "Yen"

Part recall, part rule: a subdivision's code starts with its country's, and a country's
subdivisions are mostly of one or two kinds, which the examples teach. Built from Debian's
``iso-codes`` (LGPL-2.1+; its JSON files in /usr/share/iso-codes/json), seed 0, 3000 rows:
every country and currency once, the rest drawn from the subdivisions.

    python -m benchmarks.iso_codes
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "iso-codes.jsonl"
SOURCE = Path("/usr/share/iso-codes/json")
ROWS = 3000


def load(source: Path, standard: str) -> list[dict]:
    path = source / f"iso_{standard}.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: install Debian's iso-codes package (apt-get install iso-codes)")
    return json.loads(path.read_text(encoding="utf-8"))[standard]


def country_row(c: dict) -> dict[str, str]:
    return {"instruction": f"Give the ISO 3166-1 codes of {c['name']}.", "input": "",
            "output": f"{c['alpha_2']}, {c['alpha_3']}, {c['numeric']}"}


def currency_row(c: dict) -> dict[str, str]:
    return {"instruction": f"Which currency has the ISO 4217 code '{c['alpha_3']}'?", "input": "",
            "output": c["name"]}


def subdivision_row(s: dict, countries: dict[str, str]) -> dict[str, str]:
    kind = s["type"].lower().replace("islands, groups of islands", "island group")
    article = "an" if kind[0] in "aeiou" and not kind.startswith("uni") else "a"  # "a unitary authority"
    return {"instruction": f"What is the ISO 3166-2 subdivision '{s['code']}'?", "input": "",
            "output": f"{s['name']}, {article} {kind} of {countries[s['code'].split('-')[0]]}"}


def rows(source: Path = SOURCE, n: int = ROWS, seed: int = 0) -> list[dict[str, str]]:
    countries, currencies = load(source, "3166-1"), load(source, "4217")
    names = {c["alpha_2"]: c["name"] for c in countries}
    subdivisions = [s for s in load(source, "3166-2") if s["code"].split("-")[0] in names]
    fixed = [country_row(c) for c in countries] + [currency_row(c) for c in currencies]
    rng = random.Random(seed)
    drawn = rng.sample(subdivisions, min(len(subdivisions), max(0, n - len(fixed))))
    out = fixed + [subdivision_row(s, names) for s in drawn]
    rng.shuffle(out)
    return out


def main() -> None:
    built = rows()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in built), encoding="utf-8")
    print(f"{len(built)} rows -> {OUT}")


if __name__ == "__main__":
    main()
