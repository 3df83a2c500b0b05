"""Tokenized examples held compactly, so that a dataset of millions of rows fits in memory.

A Python list of ints costs about 36 bytes per token; here a token costs 3 (a 2-byte id
when the vocabulary allows it, and one byte saying whether it carries loss): a million
80-token examples take about 240 MB. ``Examples`` is a read-only sequence of ``Encoded``
over a shared ``TokenBuffer``, so the train and eval splits are index lists, not copies.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

from xgblora_engine.data.tokenize import IGNORE, Encoded


class TokenBuffer:
    """Append-only storage of encoded examples, addressed by their order of appending."""

    def __init__(self, vocab_size: int) -> None:
        self._ids = array("H" if vocab_size <= 0xFFFF else "I")
        self._targets = bytearray()  # 1 where the label is the token itself, 0 where IGNORE
        self._ends = array("Q")
        self._truncated = bytearray()
        self._turns_cut = array("I")
        self._tokens_cut = array("I")

    def append(self, example: Encoded) -> int:
        """Store ``example``; its position in the buffer."""
        for token, label in zip(example.input_ids, example.labels):
            if label != IGNORE and label != token:
                raise ValueError("a label is neither IGNORE nor its own token: it cannot be stored as a flag")
        self._ids.extend(example.input_ids)
        self._targets.extend(label != IGNORE for label in example.labels)
        self._ends.append(len(self._ids))
        self._truncated.append(example.truncated)
        self._turns_cut.append(example.turns_cut)
        self._tokens_cut.append(example.tokens_cut)
        return len(self._ends) - 1

    def __len__(self) -> int:
        return len(self._ends)

    def example(self, i: int) -> Encoded:
        start, end = (self._ends[i - 1] if i else 0), self._ends[i]
        ids = self._ids[start:end].tolist()
        labels = [t if flag else IGNORE for t, flag in zip(ids, self._targets[start:end])]
        return Encoded(ids, labels, bool(self._truncated[i]), self._turns_cut[i], self._tokens_cut[i])

    def n_tokens(self, i: int) -> int:
        return self._ends[i] - (self._ends[i - 1] if i else 0)

    @property
    def nbytes(self) -> int:
        arrays = (self._ids, self._ends, self._turns_cut, self._tokens_cut)
        return sum(a.itemsize * len(a) for a in arrays) + len(self._targets) + len(self._truncated)


class Examples(Sequence[Encoded]):
    """The examples at ``positions`` of a buffer, in that order."""

    def __init__(self, buffer: TokenBuffer, positions: Sequence[int]) -> None:
        self.buffer, self.positions = buffer, array("Q", positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Examples(self.buffer, self.positions[i])
        return self.buffer.example(self.positions[i])

    def __iter__(self) -> Iterator[Encoded]:
        return (self.buffer.example(p) for p in self.positions)

    def lengths(self) -> array:
        return array("I", (self.buffer.n_tokens(p) for p in self.positions))
