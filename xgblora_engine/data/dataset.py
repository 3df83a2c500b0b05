"""From a data setting to tokenized train/eval examples and a resumable batch stream."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from xgblora_engine.config import DataConfig
from xgblora_engine.data.formats import FormatReport, detect_format, to_conversation
from xgblora_engine.data.readers import read_rows
from xgblora_engine.data.tokenize import IGNORE, Encoded, encode, ensure_chat_template, preview
from xgblora_engine.errors import UserError
from xgblora_engine.payloads import DataReport as DataReportPayload
from xgblora_engine.payloads import PreviewExample

PREVIEW_EXAMPLES = 3  # training examples shown rendered in the Data panel

Batch = dict[str, torch.Tensor]


@dataclass
class TokenizeCounts:
    rows: int = 0
    truncated: int = 0  # longer than seq_len: prompt shortened (chat) or end cut (text)
    dropped: int = 0  # the response alone is longer than seq_len
    turns_cut: int = 0
    tokens_cut: int = 0


@dataclass
class DataReport:
    source: str
    format: FormatReport
    n_train: int
    n_eval: int
    eval_source: str
    truncated: int
    dropped: int
    token_mean: float
    token_p95: int
    token_max: int
    seq_len: int
    fallback_template: bool
    eval_dropped: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)
    turns_cut: int = 0  # oldest messages removed from training examples to fit seq_len
    tokens_cut: int = 0  # prompt tokens cut from their start
    preview: list[PreviewExample] = field(default_factory=list, repr=False)

    @property
    def n_rows(self) -> int:
        return self.format.n_rows

    def describe(self) -> str:
        lines = [f"data: {self.source}: {self.format.describe()}",
                 f"  {self.n_train} training and {self.n_eval} eval examples (eval: {self.eval_source})",
                 f"  tokens per example: mean {self.token_mean:.0f}, p95 {self.token_p95}, max {self.token_max}; "
                 f"{self.truncated} truncated to {self.seq_len}"]
        if self.turns_cut or self.tokens_cut:
            lines.append(f"  their responses are kept whole: {self.turns_cut} oldest messages and "
                         f"{self.tokens_cut} prompt tokens were cut instead")
        if self.dropped or self.eval_dropped:
            lines.append(f"  {self.dropped + self.eval_dropped} dropped ({self.dropped} training, "
                         f"{self.eval_dropped} eval): the response alone is longer than {self.seq_len} tokens")
        if self.fallback_template:
            lines.append("  the tokenizer has no chat template: a plain ### Instruction/### Response one is used")
        return "\n".join(lines)

    def to_payload(self) -> DataReportPayload:
        return DataReportPayload(
            source=self.source, format=self.format.format, columns=self.format.columns,
            all_columns=self.format.all_columns, n_rows=self.n_rows, n_train=self.n_train, n_eval=self.n_eval,
            eval_source=self.eval_source, truncated=self.truncated, dropped=self.dropped,
            eval_dropped=self.eval_dropped, token_mean=self.token_mean, token_p95=self.token_p95,
            token_max=self.token_max, seq_len=self.seq_len, fallback_template=self.fallback_template,
            lengths=self.lengths, turns_cut=self.turns_cut, tokens_cut=self.tokens_cut, preview=self.preview)


@dataclass
class PreparedData:
    train: list[Encoded]
    eval: list[Encoded]
    report: DataReport


def prepare_data(cfg: DataConfig, tokenizer, seed: int) -> PreparedData:
    """Read, detect, split and tokenize the training (and eval) data of a run."""
    fallback = ensure_chat_template(tokenizer)
    rows = read_rows(cfg.path)
    fmt = detect_format(rows, cfg.format, cfg.columns)
    numbered = list(enumerate(rows, start=1))  # messages name a row by its place in the file
    if cfg.eval_path:
        eval_rows = read_rows(cfg.eval_path)
        eval_fmt = detect_format(eval_rows, cfg.format, cfg.columns)
        train_rows, eval_source = numbered, cfg.eval_path
        eval_rows = list(enumerate(eval_rows, start=1))[: max(0, cfg.max_eval_examples)]
    else:
        train_rows, eval_rows = split_rows(numbered, cfg.eval_fraction, cfg.max_eval_examples, seed)
        eval_fmt = fmt
        eval_source = f"{len(eval_rows)} rows held out ({cfg.eval_fraction:.0%}, at most {cfg.max_eval_examples})"
    train, counts = tokenize_rows(train_rows, fmt, tokenizer, cfg)
    evals, eval_counts = tokenize_rows(eval_rows, eval_fmt, tokenizer, cfg)
    if not train:
        raise UserError(f"no usable training example in {cfg.path}: in all {counts.rows} the response alone "
                        f"is longer than {cfg.seq_len} tokens",
                        f"raise --seq-len (now {cfg.seq_len}) or shorten the responses")
    report = _report(cfg, fmt, train, evals, eval_source, counts, eval_counts, fallback)
    report.preview = [preview(tokenizer, e) for e in train[:PREVIEW_EXAMPLES]]
    return PreparedData(train, evals, report)


def tokenize_rows(rows: list[tuple[int, dict]], report: FormatReport, tokenizer,
                  cfg: DataConfig) -> tuple[list[Encoded], TokenizeCounts]:
    """Encoded examples with at least one target, and what was truncated or dropped, from
    (row number in its file, row) pairs."""
    kept, counts = [], TokenizeCounts(rows=len(rows))
    for i, row in rows:
        example = encode(tokenizer, to_conversation(row, report, i), cfg.seq_len, cfg.train_on)
        counts.truncated += example.truncated
        counts.turns_cut += example.turns_cut
        counts.tokens_cut += example.tokens_cut if example.n_tokens else 0
        if example.n_targets == 0:
            counts.dropped += 1
        else:
            kept.append(example)
    return kept, counts


def split_rows(rows: list, fraction: float, max_eval: int, seed: int) -> tuple[list, list]:
    """Seeded hold-out of round(fraction * n) rows, at least 1 (when there are 2+ rows) and
    at most ``max_eval``: rows that would never be scored stay in training."""
    if fraction <= 0 or max_eval <= 0 or len(rows) < 2:
        return rows, []
    n_eval = min(max_eval, len(rows) - 1, max(1, round(len(rows) * fraction)))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _report(cfg: DataConfig, fmt: FormatReport, train: list[Encoded], evals: list[Encoded], eval_source: str,
            counts: TokenizeCounts, eval_counts: TokenizeCounts, fallback: bool) -> DataReport:
    lengths = [e.n_tokens for e in train]
    ordered = sorted(lengths)
    return DataReport(
        source=cfg.path, format=fmt, n_train=len(train), n_eval=len(evals), eval_source=eval_source,
        truncated=counts.truncated, dropped=counts.dropped, token_mean=sum(lengths) / len(lengths),
        token_p95=ordered[int(0.95 * (len(ordered) - 1))], token_max=ordered[-1], seq_len=cfg.seq_len,
        fallback_template=fallback, eval_dropped=eval_counts.dropped, lengths=lengths,
        turns_cut=counts.turns_cut, tokens_cut=counts.tokens_cut)


# --- batching ----------------------------------------------------------------------------

def collate(examples: list[Encoded], pad_id: int) -> Batch:
    """Right-pad to the longest example of the batch; padding carries no loss."""
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
        if not examples:
            raise UserError("there are no training examples to batch", "check the data file and --seq-len")
        if batch_size < 1:
            raise UserError(f"invalid batch size {batch_size}", "use --batch-size 1 or more")
        if pad_id is None:
            raise UserError("the tokenizer has no padding token", "call ensure_chat_template first")
        self.examples, self.batch_size, self.seed, self.pad_id = examples, batch_size, seed, pad_id
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        # a fixed integer mix of (seed, epoch): hash() of a tuple is not stable across runs
        order = list(range(len(self.examples)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_batch(self) -> Batch:
        chosen = []
        while len(chosen) < self.batch_size:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            chosen.append(self.examples[self._order[self.position]])
            self.position += 1
        return collate(chosen, self.pad_id)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "n_examples": len(self.examples),
                "seed": self.seed}

    def load_state(self, state: dict[str, int]) -> None:
        self._check_same_data(state)
        position = int(state["position"])
        if not 0 <= position <= len(self.examples):
            raise UserError(f"invalid data position {position} in the saved state", "start a new run")
        self.epoch, self.position = int(state["epoch"]), position
        self._order = self._permutation(self.epoch)

    def _check_same_data(self, state: dict[str, int]) -> None:
        n, seed = int(state.get("n_examples", len(self.examples))), int(state.get("seed", self.seed))
        if n != len(self.examples):
            raise UserError(f"the training data changed since the run was saved ({n} examples then, "
                            f"{len(self.examples)} now), so a resume cannot replay the same batches",
                            "resume with the same data file, seq_len and eval split, or start a new run")
        if seed != self.seed:
            raise UserError(f"the run was saved with seed {seed}, not {self.seed}",
                            f"resume with --seed {seed}, or start a new run")

    def longest_batch(self) -> Batch:
        """The batch of the longest examples: the worst case for memory."""
        longest = sorted(self.examples, key=lambda e: e.n_tokens, reverse=True)[: self.batch_size]
        return collate((longest * self.batch_size)[: self.batch_size], self.pad_id)


def eval_batches(examples: list[Encoded], batch_size: int, pad_id: int) -> Iterator[Batch]:
    """Fixed-order batches over the eval examples (the last one may be smaller)."""
    for start in range(0, len(examples), batch_size):
        yield collate(examples[start:start + batch_size], pad_id)
