"""From a data setting to tokenized train/eval examples and a resumable batch stream."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from xgblora_engine.config import DataConfig
from xgblora_engine.data.formats import FormatReport, detect_format, to_conversation
from xgblora_engine.data.readers import read_rows
from xgblora_engine.data.tokenize import IGNORE, Encoded, encode, ensure_chat_template
from xgblora_engine.errors import UserError


@dataclass
class DataReport:
    source: str
    format: FormatReport
    n_train: int
    n_eval: int
    eval_source: str
    truncated: int
    dropped: int  # examples with no trainable token left after truncation
    token_mean: float
    token_p95: int
    token_max: int
    seq_len: int
    fallback_template: bool
    lengths: list[int] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        lines = [f"data: {self.source}: {self.format.describe()}",
                 f"  {self.n_train} training and {self.n_eval} eval examples (eval: {self.eval_source})",
                 f"  tokens per example: mean {self.token_mean:.0f}, p95 {self.token_p95}, max {self.token_max}; "
                 f"{self.truncated} truncated to {self.seq_len}"]
        if self.dropped:
            lines.append(f"  {self.dropped} dropped: no response token left within {self.seq_len} tokens")
        if self.fallback_template:
            lines.append("  the tokenizer has no chat template: a plain ### Instruction/### Response one is used")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"source": self.source, "format": self.format.format, "columns": self.format.columns,
                "all_columns": self.format.all_columns, "n_train": self.n_train, "n_eval": self.n_eval,
                "truncated": self.truncated, "dropped": self.dropped, "token_mean": self.token_mean,
                "token_p95": self.token_p95, "token_max": self.token_max, "lengths": self.lengths,
                "describe": self.describe()}


@dataclass
class PreparedData:
    train: list[Encoded]
    eval: list[Encoded]
    report: DataReport


def tokenize_rows(rows, report: FormatReport, tokenizer, cfg: DataConfig) -> tuple[list[Encoded], int]:
    """Encoded examples with at least one target, and how many were dropped."""
    kept, dropped = [], 0
    for i, row in enumerate(rows, start=1):
        example = encode(tokenizer, to_conversation(row, report, i), cfg.seq_len, cfg.train_on)
        if example.n_targets == 0:
            dropped += 1
        else:
            kept.append(example)
    return kept, dropped


def split_rows(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, min(len(rows) - 1, round(len(rows) * fraction)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def prepare_data(cfg: DataConfig, tokenizer, seed: int) -> PreparedData:
    fallback = ensure_chat_template(tokenizer)
    rows = read_rows(cfg.path)
    fmt = detect_format(rows, cfg.format, cfg.columns)
    if cfg.eval_path:
        eval_rows = read_rows(cfg.eval_path)
        eval_fmt = detect_format(eval_rows, cfg.format, cfg.columns)
        train_rows, eval_source = rows, cfg.eval_path
    else:
        train_rows, eval_rows = split_rows(rows, cfg.eval_fraction, seed)
        eval_fmt, eval_source = fmt, f"{cfg.eval_fraction:.0%} held out"
    train, dropped = tokenize_rows(train_rows, fmt, tokenizer, cfg)
    evals, _ = tokenize_rows(eval_rows[: cfg.max_eval_examples], eval_fmt, tokenizer, cfg)
    if not train:
        raise UserError(f"no usable training example in {cfg.path}",
                        f"every example lost its response to truncation: raise --seq-len (now {cfg.seq_len})")
    lengths = [e.n_tokens for e in train]
    ordered = sorted(lengths)
    report = DataReport(cfg.path, fmt, len(train), len(evals), eval_source,
                        sum(e.truncated for e in train), dropped, sum(lengths) / len(lengths),
                        ordered[int(0.95 * (len(ordered) - 1))], ordered[-1], cfg.seq_len, fallback, lengths)
    return PreparedData(train, evals, report)


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch."""
    width = max(e.n_tokens for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = e.n_tokens
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class BatchStream:
    """Endless, reproducible batches: epoch e visits the examples in a permutation drawn
    from (seed, e). Its state is two integers, so a resumed run sees the same batches."""

    def __init__(self, examples: list[Encoded], batch_size: int, seed: int, pad_id: int) -> None:
        self.examples, self.batch_size, self.seed, self.pad_id = examples, batch_size, seed, pad_id
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 100_003 + epoch).shuffle(order)
        return order

    def next_batch(self) -> dict[str, torch.Tensor]:
        chosen = []
        while len(chosen) < self.batch_size:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            chosen.append(self.examples[self._order[self.position]])
            self.position += 1
        return collate(chosen, self.pad_id)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)

    def longest_batch(self) -> dict[str, torch.Tensor]:
        """The batch of the longest examples: the worst case for memory."""
        longest = sorted(self.examples, key=lambda e: e.n_tokens, reverse=True)[: self.batch_size]
        return collate((longest * self.batch_size)[: self.batch_size], self.pad_id)


def eval_batches(examples: list[Encoded], batch_size: int, pad_id: int):
    for start in range(0, len(examples), batch_size):
        yield collate(examples[start:start + batch_size], pad_id)
