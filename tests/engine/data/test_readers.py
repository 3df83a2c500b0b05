import json
import re
import sys
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from xgblora_engine.data import readers
from xgblora_engine.data.readers import iter_rows, looks_like_hub_id, parse_hub_spec, read_rows
from xgblora_engine.data.sample import sample_names, sample_rows
from xgblora_engine.errors import UserError

ROWS = [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Say bye", "output": "bye"}]
RESOURCES = Path(__file__).resolve().parents[3] / "resources" / "datasets"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_each_file_type_reads_the_same_rows(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS, "version": 2}))
    write_jsonl(tmp_path / "lines.json", ROWS)  # JSON Lines saved as .json
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.json", "wrapped.json", "lines.json", "d.csv", "d.parquet"):
        assert read_rows(str(tmp_path / name)) == ROWS, name


def test_csv_keeps_text_as_written(tmp_path):
    (tmp_path / "d.csv").write_bytes('\ufeffprompt,completion\n007,"a, b"\n'.encode())
    assert read_rows(str(tmp_path / "d.csv")) == [{"prompt": "007", "completion": "a, b"}]


def test_jsonl_keeps_line_separators_inside_strings(tmp_path):
    row = {"text": "one\u2028two"}
    (tmp_path / "d.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_rows(str(tmp_path / "d.jsonl")) == [row]


def test_txt_paragraphs_become_text_rows(tmp_path):
    (tmp_path / "t.txt").write_text("First paragraph\nstill first.\n\n\nSecond one.\r\n\r\nThird.\n")
    assert read_rows(str(tmp_path / "t.txt")) == [
        {"text": "First paragraph\nstill first."}, {"text": "Second one."}, {"text": "Third."}]


def test_bad_json_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"instruction": "x", "output": }\n')
    with pytest.raises(UserError, match=r"bad.jsonl, line 3, column 32: not valid JSON") as info:
        read_rows(str(path))
    assert "one complete JSON object" in info.value.hint
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    with pytest.raises(UserError, match="bad.jsonl, line 2: expected a JSON object, got a list"):
        read_rows(str(path))


@pytest.mark.parametrize("name, content, message", [
    ("d.xlsx", b"x", r"unsupported data file type '.xlsx'"),
    ("empty.jsonl", b"", "data file .*empty.jsonl is empty"),
    ("blank.jsonl", b"\n\n", "has no rows"),
    ("empty.csv", b"", "is empty"),
    ("bad.json", b'[{"a": 1},\n {not json}]', r"bad.json, line 2, column 3: not valid JSON"),
    ("two.json", b'{"a": [], "b": []}', "an object holding exactly one list"),
    ("scalars.json", b"[1, 2]", "example 1 is a number, not an object"),
    ("broken.parquet", b"PAR1 nope", "not a readable Parquet file"),
    ("latin1.jsonl", '{"text": "caf\xe9"}'.encode("latin-1"), "is not UTF-8 text"),
])
def test_bad_files(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        read_rows(str(tmp_path / name))
    assert info.value.hint


def test_unknown_extension_lists_the_supported_ones(tmp_path):
    (tmp_path / "d.xlsx").write_bytes(b"x")
    with pytest.raises(UserError) as info:
        read_rows(str(tmp_path / "d.xlsx"))
    assert all(ext in info.value.hint for ext in (".jsonl", ".json", ".csv", ".parquet", ".txt"))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="data file not found: .*nope.jsonl"):
        read_rows(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="data file not found: data/train.jsonl"):
        read_rows("data/train.jsonl")  # looks like owner/name but is a path to a missing file
    with pytest.raises(UserError, match="is a folder"):
        read_rows(str(tmp_path))


def test_hub_ids_are_told_apart_from_paths():
    assert looks_like_hub_id("tatsu-lab/alpaca") and looks_like_hub_id("org/set:test@en")
    assert not looks_like_hub_id("data/train.jsonl") and not looks_like_hub_id("train")
    assert not looks_like_hub_id("/abs/path")
    assert parse_hub_spec("org/set:test@en") == parse_hub_spec("org/set@en:test") == ("org/set", "test", "en")
    assert parse_hub_spec("org/set") == ("org/set", None, None)


def test_hub_dataset_offline_names_the_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))  # certainly not cached
    with pytest.raises(UserError, match="dataset 'nonexistent-org/nonexistent-data' is not in the local "
                                        r"Hugging Face cache and the Hub cannot be reached \(HF_HUB_OFFLINE") as info:
        read_rows("nonexistent-org/nonexistent-data:train")
    assert "while online" in info.value.hint and "local .jsonl" in info.value.hint


def test_sample_datasets_are_real_short_and_deterministic():
    rows = read_rows("sample")
    assert 300 <= len(rows) <= 600 and rows == read_rows("sample")
    assert all(r["instruction"] and r["output"] and r["input"] == "" for r in rows)
    assert max(len(r["output"].split()) for r in rows) <= 60
    assert any("assert" in r["instruction"] for r in rows)
    names = read_rows("sample:unicode-names")
    assert len(names) == 400 and len({r["instruction"] for r in names}) == 400
    for row in names:  # a checkable answer
        char = re.search(r"character '(.)'\?$", row["instruction"]).group(1)
        assert row["output"] == unicodedata.name(char)
    with pytest.raises(UserError, match="unknown sample dataset 'nope'"):
        read_rows("sample:nope")


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the bundled copies were built from Python 3.11's docs")
@pytest.mark.parametrize("name", sample_names())
def test_bundled_copies_match_the_builder(name):
    assert read_rows(str(RESOURCES / f"{name}.jsonl")) == sample_rows(name)


def test_rows_are_read_one_at_a_time(tmp_path):
    """A bad line stops the read only when it is reached, and names itself."""
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(5)) + "{oops\n")
    rows = iter_rows(str(path))
    assert [next(rows) for _ in range(5)] == [{"text": f"row {i}"} for i in range(5)]
    with pytest.raises(UserError, match="d.jsonl, line 6, column 2: not valid JSON"):
        next(rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_are_read_in_chunks_in_order(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(readers, "CSV_CHUNK", 3)
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]
    path = tmp_path / f"d{suffix}"
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    assert read_rows(str(path)) == rows and read_rows(str(path), limit=4) == rows[:4]


def test_a_file_of_blank_lines_has_no_rows(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n  \n")
    with pytest.raises(UserError, match="has no rows"):
        read_rows(str(tmp_path / "d.jsonl"))
