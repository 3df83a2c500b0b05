import json

import pandas as pd
import pytest

from xgblora_engine.data.readers import read_rows
from xgblora_engine.errors import UserError

ROWS = [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Say bye", "output": "bye"}]


def test_each_file_type_reads_the_same_rows(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    (tmp_path / "d.json").write_text(json.dumps({"data": ROWS}))
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    for ext in ("jsonl", "json", "csv", "parquet"):
        assert read_rows(str(tmp_path / f"d.{ext}")) == ROWS, ext


def test_txt_paragraphs_become_text_rows(tmp_path):
    (tmp_path / "t.txt").write_text("First paragraph\nstill first.\n\n\nSecond one.\n")
    assert read_rows(str(tmp_path / "t.txt")) == [{"text": "First paragraph\nstill first."}, {"text": "Second one."}]


def test_bad_json_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"instruction": "x", "output": }\n')
    with pytest.raises(UserError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_rows(str(path))
    path.write_text('[1, 2]\n')
    with pytest.raises(UserError, match="line 1: expected a JSON object, got list"):
        read_rows(str(path))


@pytest.mark.parametrize("name, content, message", [
    ("d.xlsx", b"x", "unsupported data file type '.xlsx'"),
    ("empty.jsonl", b"\n", "has no rows"),
    ("bad.json", b"{not json", "not valid JSON"),
])
def test_bad_files(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_rows(str(tmp_path / name))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="data file not found: .*nope.jsonl"):
        read_rows(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="is a folder"):
        read_rows(str(tmp_path))


def test_hub_dataset_offline_names_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="dataset 'nonexistent-org/nonexistent-data' is not in the local cache") as info:
        read_rows("nonexistent-org/nonexistent-data")
    assert "local" in info.value.hint


def test_sample_datasets_are_real_and_deterministic():
    rows = read_rows("sample")
    assert 250 <= len(rows) <= 600 and rows == read_rows("sample")
    assert all(r["instruction"] and r["output"] for r in rows)
    names = read_rows("sample:unicode-names")
    assert len(names) == 400 and all(r["output"].isupper() for r in names)
