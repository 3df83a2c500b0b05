import json

import pytest
import torch

from xgblora_engine.config import DataConfig
from xgblora_engine.data.dataset import BatchStream, eval_batches, prepare_data, split_rows
from xgblora_engine.data.tokenize import IGNORE, Encoded
from xgblora_engine.errors import UserError


def examples(n: int) -> list[Encoded]:
    """n distinct examples of lengths 1..5 whose first token is their index."""
    return [Encoded([i] + [7] * (i % 5), [IGNORE] + [7] * (i % 5), False) for i in range(n)]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_sample_prepares_with_a_held_out_split(smol_tokenizer):
    data = prepare_data(DataConfig(seq_len=64, eval_fraction=0.1, max_eval_examples=16), smol_tokenizer, seed=0)
    r = data.report
    assert r.n_eval == len(data.eval) == 16 and r.n_train == len(data.train) == r.n_rows - 16 - r.dropped
    assert r.format.format == "alpaca" and not r.fallback_template
    assert all(e.labels[-2] == smol_tokenizer.eos_token_id for e in data.train), "every response ends with <|im_end|>"
    assert r.truncated > 0 and r.token_max == 64 and r.token_mean <= r.token_p95 <= r.token_max
    text = r.describe()
    assert "alpaca format: instruction='instruction'" in text and "truncated to 64" in text
    assert "16 rows held out" in text
    payload = r.to_payload()
    assert payload.n_train == r.n_train and payload.format == r.format.format


def test_sample_fits_128_tokens(smol_tokenizer):
    r = prepare_data(DataConfig(seq_len=128), smol_tokenizer, seed=0).report
    assert r.truncated == 0 and r.dropped == 0 and 300 <= r.n_rows <= 600


def test_split_is_seeded_and_keeps_rows_that_would_not_be_scored():
    rows = list(range(100))
    train, held = split_rows(len(rows), 0.1, 64, seed=0)
    assert (len(train), len(held)) == (90, 10) and sorted(train + held) == rows
    assert split_rows(len(rows), 0.1, 64, seed=0) == (train, held)
    assert split_rows(len(rows), 0.1, 64, seed=1)[1] != held
    assert len(split_rows(len(rows), 0.5, 8, seed=0)[1]) == 8  # capped: the other 42 train
    assert split_rows(2, 0.01, 64, seed=0)[1] in ([0], [1])  # at least one eval row
    assert split_rows(1, 0.5, 64, seed=0) == ([0], [])
    assert split_rows(len(rows), 0.0, 64, seed=0) == (rows, [])


def test_eval_file_and_dropped_examples(tmp_path, smol_tokenizer):
    rows = [{"instruction": "short", "output": "ok"}, {"instruction": "long " * 200, "output": "kept"},
            {"instruction": "short", "output": "lost " * 60}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = DataConfig(path=path, eval_path=path, seq_len=48)
    data = prepare_data(cfg, smol_tokenizer, 0)
    r = data.report
    assert (r.n_train, r.dropped, r.truncated, r.n_eval, r.eval_dropped) == (2, 1, 2, 2, 1)
    assert r.tokens_cut > 150 and "200 " not in r.describe()
    assert "2 dropped (1 training, 1 eval): the response alone is longer than 48 tokens" in r.describe()
    assert f"eval: {path}" in r.describe() and "responses are kept whole" in r.describe()
    cfg.seq_len = 2
    with pytest.raises(UserError, match="no usable training example .* in all 3 the response alone") as info:
        prepare_data(cfg, smol_tokenizer, 0)
    assert "--seq-len" in info.value.hint


def test_bad_row_stops_preparation_with_its_number(tmp_path, smol_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "a", "a": "b"}, {"q": "c", "a": ""}])
    cfg = DataConfig(path=path, columns={"instruction": "q", "output": "a"}, eval_fraction=0.0)
    with pytest.raises(UserError, match=r"row 2: field 'a' \(output\) is missing or empty"):
        prepare_data(cfg, smol_tokenizer, 0)


def test_fallback_template_is_reported(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "What is 2+2?", "completion": "It is 4."}] * 3)
    r = prepare_data(DataConfig(path=path, seq_len=64), tiny_tokenizer, 0).report
    assert r.fallback_template and "no chat template" in r.describe()
    assert (r.n_train, r.n_eval) == (2, 1)


def test_batch_stream_is_deterministic_and_resumable():
    data = examples(10)
    a = BatchStream(data, 4, seed=1, pad_id=0)
    first = [a.next_batch() for _ in range(12)]  # several epochs: 10 is not a multiple of 4
    b = BatchStream(data, 4, seed=1, pad_id=0)
    for _ in range(5):
        b.next_batch()
    c = BatchStream(data, 4, seed=1, pad_id=0)
    c.load_state(b.state())
    assert all(same(expected, c.next_batch()) for expected in first[5:])
    # every epoch visits each example once
    firsts = torch.cat([batch["input_ids"][:, 0] for batch in first[:5]]).tolist()
    assert sorted(firsts[:10]) == list(range(10)) and sorted(firsts[10:20]) == list(range(10))
    assert firsts[:10] != firsts[10:20]  # a new permutation each epoch
    other = BatchStream(data, 4, seed=2, pad_id=0)
    assert not all(same(x, other.next_batch()) for x in first[:3])


def test_resume_refuses_other_data_or_seed():
    state = BatchStream(examples(10), 2, seed=1, pad_id=0).state()
    with pytest.raises(UserError, match="10 examples then, 9 now"):
        BatchStream(examples(9), 2, seed=1, pad_id=0).load_state(state)
    with pytest.raises(UserError, match="saved with seed 1, not 3"):
        BatchStream(examples(10), 2, seed=3, pad_id=0).load_state(state)
    with pytest.raises(UserError, match="no training examples"):
        BatchStream([], 2, seed=1, pad_id=0)


def test_batches_are_right_padded_with_masked_labels():
    batch = BatchStream(examples(5), 5, seed=0, pad_id=99).next_batch()
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape == batch["labels"].shape == (5, 5) and batch["input_ids"].dtype == torch.long
    for row, n in enumerate(lengths.tolist()):
        assert (batch["input_ids"][row, n:] == 99).all() and (batch["labels"][row, n:] == IGNORE).all()
        assert (batch["attention_mask"][row, :n] == 1).all()


def test_longest_batch_and_eval_batches():
    data = examples(7)
    longest = BatchStream(data, 3, 0, pad_id=0).longest_batch()
    assert longest["attention_mask"].sum(1).tolist() == [5, 4, 3]
    assert BatchStream(data[:1], 3, 0, pad_id=0).longest_batch()["input_ids"].shape == (3, 1)
    batches = list(eval_batches(data, 3, pad_id=0))
    assert [b["input_ids"].shape[0] for b in batches] == [3, 3, 1]
    assert torch.cat([b["input_ids"][:, 0] for b in batches]).tolist() == list(range(7))


def test_the_format_is_read_from_the_first_rows_and_later_rows_are_checked_as_they_come(
        tmp_path, monkeypatch, smol_tokenizer):
    from xgblora_engine.data import dataset

    monkeypatch.setattr(dataset, "DETECT_ROWS", 2)  # as dataset imported it
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(6)] + [{"instruction": "q", "answer": "a"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(UserError, match="row 7: field 'output' is missing"):
        prepare_data(DataConfig(path=path, seq_len=64), smol_tokenizer, seed=0)
    data = prepare_data(DataConfig(path=write_jsonl(tmp_path / "ok.jsonl", rows[:6]), seq_len=64), smol_tokenizer, 0)
    assert data.report.n_rows == 6 and len(data.train) + len(data.eval) == 6


def test_prepared_examples_cost_a_few_bytes_per_token(tmp_path, smol_tokenizer):
    """Not Python lists (about 36 bytes a token each, twice): a file of any size fits."""
    rows = [{"text": f"line {i} " + "word " * (i % 50)} for i in range(3000)]
    data = prepare_data(DataConfig(path=write_jsonl(tmp_path / "d.jsonl", rows), seq_len=64), smol_tokenizer, 0)
    tokens = sum(data.train.lengths()) + sum(data.eval.lengths())
    assert data.train.buffer is data.eval.buffer  # the splits are views, not copies
    assert data.train.buffer.nbytes < 3 * tokens + 20 * len(rows)
    assert len(data.report.lengths) == len(data.train)  # all of them, below LENGTHS_SHOWN
