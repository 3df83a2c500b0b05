import json

import pytest

from xgblora_engine.data.formats import detect_format, to_conversation
from xgblora_engine.errors import UserError

USER_ASSISTANT = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]


@pytest.mark.parametrize("rows, fmt", [
    ([{"instruction": "a", "input": "b", "output": "c"}], "alpaca"),
    ([{"question": "a", "answer": "c"}], "alpaca"),
    ([{"query": "a", "response": "c"}], "alpaca"),
    ([{"messages": USER_ASSISTANT}], "chat"),
    ([{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "c"}]}], "chat"),
    ([{"prompt": "a", "completion": "c"}], "prompt_completion"),
    ([{"prompt": "a", "response": "c"}], "prompt_completion"),
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


def test_describe_names_every_field():
    report = detect_format([{"question": "q", "answer": "a"}] * 400)
    assert report.describe() == "alpaca format: instruction='question', input=(none), output='answer', system=(none); 400 rows"
    assert report.columns == {"instruction": "question", "output": "answer"}


def test_alpaca_input_is_appended_and_system_kept():
    row = {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief."}
    conv = to_conversation(row, detect_format([row]), 1)
    assert conv == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Translate\n\nbonjour"},
                    {"role": "assistant", "content": "hello"}]


def test_sharegpt_system_turn_and_multimodal_text_parts():
    row = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                             {"from": "gpt", "value": "A"}]}
    assert [m["role"] for m in to_conversation(row, detect_format([row]))] == ["system", "user", "assistant"]
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Q"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "A"}]}]}
    assert to_conversation(parts, detect_format([parts]))[1] == {"role": "assistant", "content": "A"}


def test_chat_messages_stored_as_json_text_in_a_csv_cell():
    row = {"messages": json.dumps(USER_ASSISTANT)}
    assert to_conversation(row, detect_format([row]), 1) == USER_ASSISTANT


def test_column_mapping_overrides_detection():
    rows = [{"q": "a", "a": "c", "text": "ignored"}]
    report = detect_format(rows, columns={"instruction": "q", "output": "a"})
    assert report.format == "alpaca" and report.columns == {"instruction": "q", "output": "a"}
    assert "instruction='q'" in report.describe()
    # a mapping wins over a format the aliases alone would pick
    rows = [{"instruction": "a", "output": "c", "body": "some text"}]
    assert detect_format(rows, columns={"text": "body"}).format == "text"
    assert detect_format(rows, format="text", columns={"text": "body"}).columns == {"text": "body"}


def test_unknown_column_lists_the_real_ones():
    with pytest.raises(UserError, match=r"column 'question' \(mapped to instruction\) is not in the data") as info:
        detect_format([{"q": "a", "a": "c"}], columns={"instruction": "question"})
    assert info.value.hint == "the data has columns: q, a"
    with pytest.raises(UserError, match="unknown field 'answer' in the column mapping") as info:
        detect_format([{"q": "a", "a": "c"}], columns={"answer": "a"})
    assert "instruction" in info.value.hint


def test_undetectable_format_says_what_it_found_and_expects():
    with pytest.raises(UserError, match=r"cannot tell the data's format from its columns \(foo, bar\)") as info:
        detect_format([{"foo": 1, "bar": 2}])
    assert "alpaca: instruction, output" in info.value.hint and "--columns" in info.value.hint


def test_forced_format_names_the_missing_field():
    with pytest.raises(UserError, match="the alpaca format needs a column for output") as info:
        detect_format([{"instruction": "a", "reply": "c"}], format="alpaca")
    assert "--columns output=" in info.value.hint


@pytest.mark.parametrize("row, message", [
    ({"instruction": "a", "output": ""}, "row 2: field 'output' is missing or empty"),
    ({"instruction": "a"}, "row 2: field 'output' is missing or empty"),
    ({"instruction": ["a"], "output": "b"}, "row 2: field 'instruction' should be text, got list"),
])
def test_bad_alpaca_rows_name_the_row_and_field(row, message):
    report = detect_format([{"instruction": "a", "output": "b"}])
    with pytest.raises(UserError, match=message):
        to_conversation(row, report, 2)


def test_mapped_field_errors_name_the_column_and_its_role():
    report = detect_format([{"q": "a", "a": "b"}], columns={"instruction": "q", "output": "a"})
    with pytest.raises(UserError, match=r"row 7: field 'a' \(output\) is missing or empty"):
        to_conversation({"q": "x", "a": None}, report, 7)


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": "only a question"}], "row 3: the conversation has no assistant message"),
    ([{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}], "row 3, message 2: unknown or missing role 'robot'"),
    ([{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}], r"row 3, message 1 \(user\): content should be text"),
    ([], "row 3: messages should be a non-empty list"),
    ("not json", "row 3: messages should be a non-empty list, got str"),
    (["hello"], "row 3, message 1: expected an object, got str"),
])
def test_bad_conversations_name_the_row_and_message(messages, message):
    report = detect_format([{"messages": USER_ASSISTANT}])
    with pytest.raises(UserError, match=message):
        to_conversation({"messages": messages}, report, 3)
