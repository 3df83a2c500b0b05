"""The fifth benchmark set: built from iso-codes' own JSON layout, and the committed copy is
what the engine reads."""

import json

import pytest

from benchmarks.iso_codes import OUT, ROWS, rows


def write_iso_codes(folder):
    tables = {
        "3166-1": [{"alpha_2": "AD", "alpha_3": "AND", "numeric": "020", "name": "Andorra"},
                   {"alpha_2": "GB", "alpha_3": "GBR", "numeric": "826", "name": "United Kingdom"}],
        "4217": [{"alpha_3": "JPY", "numeric": "392", "name": "Yen"}],
        "3166-2": [{"code": "AD-02", "name": "Canillo", "type": "Parish"},
                   {"code": "GB-BCP", "name": "Bournemouth, Christchurch and Poole", "type": "Unitary authority"},
                   {"code": "AD-03", "name": "Encamp", "type": "Administrative parish"},
                   {"code": "XX-01", "name": "Nowhere", "type": "Region"}],  # no such country: dropped
    }
    for standard, entries in tables.items():
        (folder / f"iso_{standard}.json").write_text(json.dumps({standard: entries}), encoding="utf-8")


def test_each_country_and_currency_once_then_subdivisions_with_their_country(tmp_path):
    write_iso_codes(tmp_path)
    built = rows(tmp_path, n=6)
    answers = {r["instruction"]: r["output"] for r in built}
    assert answers == {
        "Give the ISO 3166-1 codes of Andorra.": "AD, AND, 020",
        "Give the ISO 3166-1 codes of United Kingdom.": "GB, GBR, 826",
        "Which currency has the ISO 4217 code 'JPY'?": "Yen",
        "What is the ISO 3166-2 subdivision 'AD-02'?": "Canillo, a parish of Andorra",
        "What is the ISO 3166-2 subdivision 'GB-BCP'?":
            "Bournemouth, Christchurch and Poole, a unitary authority of United Kingdom",
        "What is the ISO 3166-2 subdivision 'AD-03'?": "Encamp, an administrative parish of Andorra",
    }
    assert len(built) == 6 and all(r["input"] == "" for r in built)


def test_a_missing_source_says_which_package_to_install(tmp_path):
    with pytest.raises(SystemExit, match="apt-get install iso-codes"):
        rows(tmp_path)


def test_the_committed_set_is_what_the_engine_trains_on():
    from xgblora_engine.data.formats import detect_format
    from xgblora_engine.data.readers import read_rows

    committed = [json.loads(line) for line in OUT.read_text(encoding="utf-8").splitlines()]
    assert len(committed) == ROWS and len({r["instruction"] for r in committed}) == ROWS
    assert detect_format(read_rows(str(OUT), limit=50)).format == "alpaca"
