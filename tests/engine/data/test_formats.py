import pytest

from xgblora_engine.data.formats import detect_format, to_conversation
from xgblora_engine.errors import UserError


@pytest.mark.parametrize("rows, fmt", [
    ([{"instruction": "a", "input": "b", "output": "c"}], "alpaca"),
    ([{"question": "a", "answer": "c"}], "alpaca"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}], "chat"),
    ([{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "c"}]}], "chat"),
    ([{"prompt": "a", "completion": "c"}], "prompt_completion"),
    ([{"text": "just text"}], "text"),
])
def test_formats_are_detected(rows, fmt):
    report = detect_format(rows)
    assert report.format == fmt
    conv = to_conversation(rows[0], report, 1)
    if fmt == "text":
        assert conv == "just text"
    else:
        assert conv[-2]["role"] == "user" and conv[-1] == {"role": "assistant", "content": "c"}
        assert conv[-2]["content"].startswith("a")


def test_alpaca_input_is_appended_and_system_kept():
    row = {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief."}
    conv = to_conversation(row, detect_format([row]), 1)
    assert conv == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Translate\n\nbonjour"},
                    {"role": "assistant", "content": "hello"}]


def test_column_mapping_overrides_detection():
    rows = [{"q": "a", "a": "c", "text": "ignored"}]
    report = detect_format(rows, columns={"instruction": "q", "output": "a"})
    assert report.format == "alpaca" and report.columns == {"instruction": "q", "output": "a"}
    assert "instruction='q'" in report.describe()


def test_unknown_column_lists_the_real_ones():
    with pytest.raises(UserError, match="column 'question' \\(mapped to instruction\\) is not in the data") as info:
        detect_format([{"q": "a", "a": "c"}], columns={"instruction": "question"})
    assert "q, a" in info.value.hint


def test_undetectable_format_says_what_it_found():
    with pytest.raises(UserError, match=r"cannot tell the data's format from its columns \(foo, bar\)") as info:
        detect_format([{"foo": 1, "bar": 2}])
    assert "--columns" in info.value.hint


def test_bad_rows_name_the_row():
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": ""}]
    report = detect_format(rows)
    with pytest.raises(UserError, match="row 2: field 'output' is missing or empty"):
        to_conversation(rows[1], report, 2)
    chat = [{"messages": [{"role": "user", "content": "only a question"}]}]
    with pytest.raises(UserError, match="row 1: the conversation has no assistant message"):
        to_conversation(chat[0], detect_format(chat), 1)
