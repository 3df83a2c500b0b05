import statistics
from collections import Counter

import pytest

from xgblora_engine.boosting.sampling import (
    checked_k,
    default_k,
    draw_shares,
    resolve_k,
    sample_layers,
)
from xgblora_engine.errors import UserError


@pytest.mark.parametrize("strategy", ["uniform", "cyclic", "stratified", "top-biased"])
def test_sampling_is_reproducible_and_valid(strategy):
    for r in range(1, 50):
        first = sample_layers(30, 10, seed=3, round_index=r, strategy=strategy)
        assert first == sample_layers(30, 10, seed=3, round_index=r, strategy=strategy)
        assert len(set(first)) == 10 and all(0 <= i < 30 for i in first) and first == sorted(first)


def test_rounds_and_seeds_draw_different_sets():
    draws = {tuple(sample_layers(30, 10, 0, r)) for r in range(1, 30)}
    assert len(draws) > 25
    assert sample_layers(30, 10, 0, 1) != sample_layers(30, 10, 1, 1)


def test_top_biased_draws_higher_layers_than_uniform():
    def mean_lowest(strategy):
        return statistics.mean(min(sample_layers(30, 10, 0, r, strategy)) for r in range(1, 400))

    assert mean_lowest("top-biased") > mean_lowest("uniform") + 2


@pytest.mark.parametrize("n_layers,k", [(30, 10), (32, 11), (7, 3), (5, 5)])
def test_cyclic_boosts_every_layer_once_per_cycle(n_layers, k):
    per_cycle = -(-n_layers // k)
    for cycle in range(4):
        rounds = [sample_layers(n_layers, k, 5, cycle * per_cycle + r + 1, "cyclic") for r in range(per_cycle)]
        assert all(len(set(layers)) == k for layers in rounds)
        assert set().union(*rounds) == set(range(n_layers))  # nobody left out
        if n_layers % k == 0:
            assert sum(len(layers) for layers in rounds) == n_layers  # nobody twice
    assert sample_layers(n_layers, k, 5, 1, "cyclic") != sample_layers(n_layers, k, 6, 1, "cyclic") or k == n_layers


def test_uniform_draws_leave_layers_out_that_cyclic_does_not():
    def counts(strategy):
        return [sum(i in sample_layers(30, 10, 0, r, strategy) for r in range(1, 7)) for i in range(30)]
    assert min(counts("uniform")) == 0 and max(counts("uniform")) >= 4  # by chance: 0 to 4+ of 6 rounds
    assert set(counts("cyclic")) == {2}


def test_stratified_covers_every_stratum():
    layers = sample_layers(30, 10, 0, 1, "stratified")
    assert [i // 3 for i in layers] == list(range(10))


def test_k_out_of_range_and_explicit_layers():
    with pytest.raises(UserError, match="k=31 is out of range: the model has 30 layers"):
        sample_layers(30, 31, 0, 1)
    with pytest.raises(UserError, match="k=0"):
        sample_layers(30, 0, 0, 1)
    assert sample_layers(30, 0, 0, 1, "explicit", [29, 20, 20]) == [20, 29]
    with pytest.raises(UserError, match=r"\[30\] do not exist"):
        sample_layers(30, 0, 0, 1, "explicit", [30])


def test_default_k_is_half():
    assert default_k(30) == 15 and default_k(32) == 16 and default_k(2) == 1 and default_k(1) == 1


def test_k_is_the_explicit_list_then_the_chosen_k_then_the_default():
    assert resolve_k([3, 1, 3], 7, 30) == 2
    assert resolve_k(None, 7, 30) == 7
    assert resolve_k(None, None, 30) == default_k(30)
    assert resolve_k(None, None, None) is None  # the depth is not known before a model is chosen


def test_checked_k_rejects_what_the_model_does_not_have():
    assert checked_k([29, 0], None, 30) == 2
    with pytest.raises(UserError, match="out of range"):
        checked_k(None, 31, 30)
    with pytest.raises(UserError, match="do not exist"):
        checked_k([30], None, 30)


def test_gradient_draws_follow_the_weights_and_keep_every_layer_drawable():
    weights = [0.0] * 5 + [1.0] * 20 + [10.0] * 5  # five flat, five steep layers
    counts = [0] * 30
    for r in range(1, 400):
        draw = sample_layers(30, 10, seed=0, round_index=r, strategy="gradient", weights=weights)
        assert draw == sample_layers(30, 10, seed=0, round_index=r, strategy="gradient", weights=weights)
        assert len(set(draw)) == 10 and draw == sorted(draw)
        for i in draw:
            counts[i] += 1
    steep, middle, flat = counts[25:], counts[5:25], counts[:5]
    assert min(steep) > 0.9 * 399 and max(middle) < min(steep) and max(flat) < min(middle)


def test_gradient_draws_need_the_measured_weights():
    with pytest.raises(UserError, match="gradient norm"):
        sample_layers(30, 10, 0, 1, "gradient")


def test_draw_shares_are_k_of_l_for_even_strategies_and_grow_with_depth_when_top_biased():
    assert draw_shares(30, 15, "uniform") == [0.5] * 30
    shares = draw_shares(30, 15, "top-biased")
    assert sum(shares) == pytest.approx(15, abs=1e-9)  # k layers a round
    assert shares[0] < 0.1 < 0.7 < shares[-1]
    assert all(a < b + 0.03 for a, b in zip(shares, shares[1:]))  # rising, up to counting noise
    seen = Counter(layer for r in range(1, 2001) for layer in sample_layers(30, 15, 3, r, "top-biased"))
    assert [seen[i] / 2000 for i in range(30)] == pytest.approx(shares, abs=0.04)  # what a run draws
