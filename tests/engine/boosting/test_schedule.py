import math

import pytest

from xgblora_engine.boosting.sampling import draw_shares
from xgblora_engine.boosting.schedule import Schedule, booster_lr, layer_rate_factors


def test_rounds_partition_the_steps():
    s = Schedule(1e-3, total_steps=25, steps_per_round=10)
    assert s.total_rounds == 3
    assert [list(s.round_steps(r)) for r in (1, 2, 3)] == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert s.round_of(0) == 1 and s.round_of(19) == 2 and s.round_of(20) == 3


def test_every_round_restarts_with_a_warmup():
    s = Schedule(1.0, total_steps=40, steps_per_round=10, round_warmup=2, decay="constant")
    assert [s.lr(i) for i in range(12)] == pytest.approx([1 / 3, 2 / 3] + [1.0] * 8 + [1 / 3, 2 / 3])


def test_global_cosine_decays_to_the_floor():
    s = Schedule(1.0, total_steps=100, steps_per_round=100, round_warmup=0, min_ratio=0.1)
    assert s.lr(0) == pytest.approx(1.0)
    assert s.lr(99) == pytest.approx(0.1)
    assert all(s.lr(i) >= s.lr(i + 1) for i in range(99))


def test_the_scaled_rule_keeps_the_per_step_change_of_the_model_constant():
    from xgblora_engine.boosting.schedule import booster_lr

    # a rank-1 booster on every layer trains at lr itself
    assert booster_lr(4e-3, rank=1, k=30, n_layers=30) == pytest.approx(4e-3)
    # the change per step grows as √(k·r): the rate falls by the same factor
    assert booster_lr(4e-3, rank=4, k=30, n_layers=30) == pytest.approx(2e-3)
    assert booster_lr(4e-3, rank=1, k=10, n_layers=40) == pytest.approx(8e-3)
    for rank, k in [(1, 5), (2, 10), (8, 3), (4, 30)]:
        assert booster_lr(4e-3, rank, k, 30) * (k * rank) ** 0.5 == pytest.approx(4e-3 * 30**0.5)
    assert booster_lr(4e-3, rank=4, k=10, n_layers=30, rule="fixed") == 4e-3


def test_the_linear_rule_grows_with_the_share_of_layers_left_out():
    from xgblora_engine.boosting.schedule import booster_lr, lr_rule_text

    assert booster_lr(4e-3, rank=1, k=30, n_layers=30, rule="linear") == pytest.approx(4e-3)
    # a third of the layers a round: three times the rate, where "scaled" gives √3 times
    assert booster_lr(4e-3, rank=1, k=10, n_layers=30, rule="linear") == pytest.approx(12e-3)
    assert booster_lr(4e-3, rank=4, k=10, n_layers=30, rule="linear") == pytest.approx(6e-3)
    assert lr_rule_text(4e-3, 4, 10, 30, "linear") == "lr·(L/k)/√r = 0.004·(30/10)/√4"
    assert lr_rule_text(4e-3, 4, 10, 30, "fixed") == "as given"


def test_the_drawn_rule_is_the_scaled_one_per_layer_with_its_share_of_draws():
    assert layer_rate_factors("scaled", 30, 15, "top-biased") == [1.0] * 30
    assert layer_rate_factors("drawn", 30, 15, "uniform") == [1.0] * 30  # p = k/L: the scaled rule
    factors = layer_rate_factors("drawn", 30, 15, "top-biased")
    shares = draw_shares(30, 15, "top-biased")
    assert factors == pytest.approx([math.sqrt(0.5 / p) for p in shares])
    assert factors[0] > 3 and factors[-1] < 0.85  # layer 0 is drawn in 1 round of 20, the top in 4 of 5
    assert booster_lr(6e-3, 8, 15, 30, "drawn") == booster_lr(6e-3, 8, 15, 30, "scaled")
