import json

import pytest
import torch

from xgblora_engine.config import DataConfig
from xgblora_engine.data.dataset import BatchStream, eval_batches, prepare_data
from xgblora_engine.errors import UserError


def test_sample_prepares_with_a_held_out_split(smol_tokenizer):
    data = prepare_data(DataConfig(seq_len=64, eval_fraction=0.1, max_eval_examples=16), smol_tokenizer, seed=0)
    r = data.report
    assert r.n_eval == 16 and r.n_train > 200 and r.format.format == "alpaca"
    assert r.truncated > 0 and r.token_max == 64
    assert "truncated to 64" in r.describe()


def test_eval_file_and_dropped_examples(tmp_path, smol_tokenizer):
    path = tmp_path / "train.jsonl"
    rows = [{"instruction": "short", "output": "ok"}, {"instruction": "long " * 200, "output": "lost"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataConfig(path=str(path), eval_path=str(path), seq_len=48)
    data = prepare_data(cfg, smol_tokenizer, 0)
    assert (data.report.n_train, data.report.dropped, data.report.n_eval) == (1, 1, 1)
    assert "1 dropped" in data.report.describe()
    cfg.seq_len = 8
    with pytest.raises(UserError, match="no usable training example"):
        prepare_data(cfg, smol_tokenizer, 0)


def test_batch_stream_is_deterministic_and_resumable(smol_tokenizer):
    data = prepare_data(DataConfig(seq_len=96, eval_fraction=0.0), smol_tokenizer, seed=0)
    a = BatchStream(data.train, 4, seed=1, pad_id=smol_tokenizer.pad_token_id)
    first = [a.next_batch() for _ in range(100)]  # crosses an epoch boundary
    b = BatchStream(data.train, 4, seed=1, pad_id=smol_tokenizer.pad_token_id)
    for _ in range(60):
        b.next_batch()
    c = BatchStream(data.train, 4, seed=1, pad_id=smol_tokenizer.pad_token_id)
    c.load_state(b.state())
    for expected in first[60:]:
        got = c.next_batch()
        assert all(torch.equal(expected[k], got[k]) for k in expected)
    batch = first[0]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_longest_batch_and_eval_batches(smol_tokenizer):
    data = prepare_data(DataConfig(seq_len=64, eval_fraction=0.2), smol_tokenizer, seed=0)
    stream = BatchStream(data.train, 3, 0, smol_tokenizer.pad_token_id)
    assert stream.longest_batch()["input_ids"].shape == (3, 64)
    sizes = [b["input_ids"].shape[0] for b in eval_batches(data.eval, 5, smol_tokenizer.pad_token_id)]
    assert sum(sizes) == len(data.eval)
