import pytest

from xgblora_engine.data.store import Examples, TokenBuffer
from xgblora_engine.data.tokenize import IGNORE, Encoded


def example(i: int) -> Encoded:
    return Encoded([1, 2, 60000 + i], [IGNORE, 2, 60000 + i], truncated=i % 2 == 1, turns_cut=i, tokens_cut=2 * i)


def test_an_example_comes_back_as_it_went_in():
    buffer = TokenBuffer(vocab_size=65536)
    positions = [buffer.append(example(i)) for i in range(4)]
    assert positions == [0, 1, 2, 3]
    assert [buffer.example(i) for i in positions] == [example(i) for i in range(4)]
    assert buffer.n_tokens(2) == 3 and len(buffer) == 4


def test_a_token_costs_three_bytes_when_the_vocabulary_fits_two():
    small, large = TokenBuffer(vocab_size=49152), TokenBuffer(vocab_size=152064)
    for buffer in (small, large):
        for _ in range(100):
            buffer.append(Encoded(list(range(50)), list(range(50)), False))
    per_row = 8 + 1 + 4 + 4  # end, truncated flag, turns cut, tokens cut
    assert small.nbytes == 100 * (50 * 3 + per_row)
    assert large.nbytes == 100 * (50 * 5 + per_row)
    big_id = Encoded([100_000], [100_000], False)
    assert large.example(large.append(big_id)) == big_id


def test_a_label_that_is_not_its_token_is_refused():
    with pytest.raises(ValueError, match="neither IGNORE nor its own token"):
        TokenBuffer(100).append(Encoded([1, 2], [1, 3], False))


def test_examples_are_an_ordered_view_that_slices():
    buffer = TokenBuffer(100)
    for i in range(5):
        buffer.append(Encoded([i] * (i + 1), [IGNORE] * (i + 1), False))
    view = Examples(buffer, [4, 0, 2])
    assert len(view) == 3 and [e.input_ids[0] for e in view] == [4, 0, 2]
    assert view[1] == buffer.example(0) and list(view.lengths()) == [5, 1, 3]
    assert [e.input_ids[0] for e in view[1:]] == [0, 2] and isinstance(view[1:], Examples)
