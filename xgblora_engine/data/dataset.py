"""From a data setting to tokenized train/eval examples and a resumable batch stream."""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, islice

import torch

from xgblora_engine.config import DataConfig
from xgblora_engine.data.formats import FormatReport, detect_format, to_conversation
from xgblora_engine.data.readers import DETECT_ROWS, iter_rows
from xgblora_engine.data.store import Examples, TokenBuffer
from xgblora_engine.data.tokenize import IGNORE, Encoded, encode, ensure_chat_template, preview
from xgblora_engine.errors import UserError
from xgblora_engine.payloads import DataReport as DataReportPayload
from xgblora_engine.payloads import PreviewExample

PREVIEW_EXAMPLES = 3  # training examples shown rendered in the Data panel
LENGTHS_SHOWN = 20_000  # example lengths sent for the Data panel's histogram, evenly spaced

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
    lengths: list[int] = field(default_factory=list, repr=False)  # at most LENGTHS_SHOWN, evenly spaced
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
    train: Examples
    eval: Examples
    report: DataReport


def prepare_data(cfg: DataConfig, tokenizer, seed: int) -> PreparedData:
    """Read, detect, split and tokenize the training (and eval) data of a run, one row at a
    time: memory grows with the tokens kept (a few bytes each), not with the file."""
    fallback = ensure_chat_template(tokenizer)
    fmt, tokenized = _tokenize_source(cfg.path, cfg, tokenizer)
    if cfg.eval_path:
        train_rows, eval_source = range(len(tokenized.positions)), cfg.eval_path
        _, eval_tokenized = _tokenize_source(cfg.eval_path, cfg, tokenizer, limit=max(0, cfg.max_eval_examples))
        eval_rows = range(len(eval_tokenized.positions))
    else:
        train_rows, eval_rows = split_rows(len(tokenized.positions), cfg.eval_fraction, cfg.max_eval_examples, seed)
        eval_tokenized = tokenized
        eval_source = f"{len(eval_rows)} rows held out ({cfg.eval_fraction:.0%}, at most {cfg.max_eval_examples})"
    train, counts = tokenized.select(train_rows)
    evals, eval_counts = eval_tokenized.select(eval_rows)
    if not train:
        raise UserError(f"no usable training example in {cfg.path}: in all {counts.rows} the response alone "
                        f"is longer than {cfg.seq_len} tokens",
                        f"raise --seq-len (now {cfg.seq_len}) or shorten the responses")
    report = _report(cfg, fmt, train, evals, eval_source, counts, eval_counts, fallback)
    report.preview = [preview(tokenizer, e) for e in train[:PREVIEW_EXAMPLES]]
    return PreparedData(train, evals, report)


@dataclass
class Tokenized:
    """Every row of a file, tokenized, in file order: where each row's example sits in the
    buffer (-1: dropped, its response alone is too long), and what was cut from it."""

    buffer: TokenBuffer
    positions: array  # row -> buffer position or -1
    truncated: bytearray
    turns_cut: array
    tokens_cut: array

    def select(self, rows: Iterable[int]) -> tuple[Examples, TokenizeCounts]:
        """The kept examples of ``rows`` (0-based, in that order), and their counts."""
        counts, kept = TokenizeCounts(), []
        for row in rows:
            counts.rows += 1
            counts.truncated += self.truncated[row]
            counts.turns_cut += self.turns_cut[row]
            if self.positions[row] < 0:
                counts.dropped += 1
            else:
                counts.tokens_cut += self.tokens_cut[row]
                kept.append(self.positions[row])
        return Examples(self.buffer, kept), counts


def _tokenize_source(spec: str, cfg: DataConfig, tokenizer, limit: int | None = None) -> tuple[FormatReport, Tokenized]:
    """The format (detected on the first rows) and every row of ``spec``, tokenized."""
    rows = iter_rows(spec)
    head = list(islice(rows, DETECT_ROWS))
    fmt = detect_format(head, cfg.format, cfg.columns)
    tokenized = Tokenized(TokenBuffer(len(tokenizer)), array("q"), bytearray(), array("I"), array("I"))
    # rows are numbered from 1 in messages: their place in the file
    for number, row in enumerate(islice(chain(head, rows), limit), start=1):
        example = encode(tokenizer, to_conversation(row, fmt, number), cfg.seq_len, cfg.train_on)
        tokenized.positions.append(tokenized.buffer.append(example) if example.n_targets else -1)
        tokenized.truncated.append(example.truncated)
        tokenized.turns_cut.append(example.turns_cut)
        tokenized.tokens_cut.append(example.tokens_cut if example.n_tokens else 0)
    return replace(fmt, n_rows=len(tokenized.positions)), tokenized


def split_rows(n: int, fraction: float, max_eval: int, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (0-based, in file order) of a seeded hold-out of round(fraction * n)
    rows, at least 1 (when there are 2+ rows) and at most ``max_eval``: rows that would
    never be scored stay in training."""
    if fraction <= 0 or max_eval <= 0 or n < 2:
        return list(range(n)), []
    n_eval = min(max_eval, n - 1, max(1, round(n * fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = sorted(order[:n_eval])
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], held


def _report(cfg: DataConfig, fmt: FormatReport, train: Examples, evals: Examples, eval_source: str,
            counts: TokenizeCounts, eval_counts: TokenizeCounts, fallback: bool) -> DataReport:
    lengths = train.lengths()
    ordered = sorted(lengths)
    shown = lengths[:: max(1, len(lengths) // LENGTHS_SHOWN)][:LENGTHS_SHOWN]
    return DataReport(
        source=cfg.path, format=fmt, n_train=len(train), n_eval=len(evals), eval_source=eval_source,
        truncated=counts.truncated, dropped=counts.dropped, token_mean=sum(lengths) / len(lengths),
        token_p95=ordered[int(0.95 * (len(ordered) - 1))], token_max=ordered[-1], seq_len=cfg.seq_len,
        fallback_template=fallback, eval_dropped=eval_counts.dropped, lengths=shown.tolist(),
        turns_cut=counts.turns_cut, tokens_cut=counts.tokens_cut)


# --- batching ----------------------------------------------------------------------------

def collate(examples: Sequence[Encoded], pad_id: int) -> Batch:
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

    def __init__(self, examples: Sequence[Encoded], batch_size: int, seed: int, pad_id: int) -> None:
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
        lengths = self.examples.lengths() if isinstance(self.examples, Examples) else [e.n_tokens for e in self.examples]
        top = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)[: self.batch_size]
        longest = [self.examples[i] for i in top]
        return collate((longest * self.batch_size)[: self.batch_size], self.pad_id)


def eval_batches(examples: Sequence[Encoded], batch_size: int, pad_id: int) -> Iterator[Batch]:
    """Fixed-order batches over the eval examples (the last one may be smaller)."""
    for start in range(0, len(examples), batch_size):
        yield collate(examples[start:start + batch_size], pad_id)
