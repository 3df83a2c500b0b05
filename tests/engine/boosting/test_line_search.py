import pytest
import torch

from tests.engine.boosting.test_trainer import PROJ, config, make_batches, make_trainer
from xgblora_engine import protocol as P
from xgblora_engine.boosting.booster import attach_boosters
from xgblora_engine.boosting.line_search import best_multiple, parabola_minimum
from xgblora_engine.boosting.loss import count_targets, summed_loss
from xgblora_engine.boosting.merge import Merger


@pytest.mark.parametrize("losses, expected", [
    ((3.0, 2.0, 2.0), 1.5),  # still falling at 1: the minimum lies beyond
    ((2.0, 1.0, 2.0), 1.0),  # the round went exactly as far as it should
    ((2.0, 1.9, 2.2), 0.75),  # overshot: merge less of it
    ((3.0, 2.0, 1.0), 2.0),  # a line: the lowest point measured, no further
    ((1.0, 1.5, 1.8), 0.0),  # the round only hurt
    ((4.0, 3.9, 1.0), 2.0),  # curving down: the lowest of the three
    ((2.0, 1.0, 0.1), 2.0),  # minimum of the parabola past 2: kept where it was measured
])
def test_the_multiple_is_the_lowest_point_of_the_parabola_within_0_to_2(losses, expected):
    assert parabola_minimum(*losses) == pytest.approx(expected)


def test_the_multiple_is_measured_on_the_batch_and_leaves_the_boosters_as_they_were(tiny_llama):
    names = [f"model.layers.1.{p}" for p in PROJ]
    boosters = attach_boosters(tiny_llama, names, rank=2, scaling=2.0, dropout=0.0, seed=0, round_index=1)
    with torch.no_grad():
        for b in boosters.values():
            b.B.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    batch = make_batches(n=1)[0]
    tiny_llama.train()

    def loss_at(eta):
        for b in boosters.values():
            b.scaling = 2.0 * eta
        with torch.no_grad():
            return float(summed_loss(tiny_llama.eval(), batch)) / count_targets(batch["labels"])

    direct = parabola_minimum(loss_at(0), loss_at(1), loss_at(2))
    for b in boosters.values():
        b.scaling = 2.0
    tiny_llama.train()
    assert best_multiple(tiny_llama, boosters, batch) == pytest.approx(direct, abs=1e-6)
    assert all(b.scaling == 2.0 for b in boosters.values()) and tiny_llama.training


def test_each_round_is_merged_at_its_multiple_and_the_ledger_says_so(tiny_llama):
    events = []
    cfg = config(lr=5e-2)
    cfg.boost.line_search = True
    initial = {n: p.detach().clone() for n, p in tiny_llama.named_parameters()}
    state = make_trainer(tiny_llama, cfg, events=events).fit()
    multiples = [e.update_multiple for e in events if isinstance(e, P.RoundMerged)]
    assert len(multiples) == 3 and all(0.0 <= m <= 2.0 for m in multiples) and set(multiples) != {1.0}
    for record, multiple in zip(state.ledger.rounds, multiples):
        scalings = [e.scaling for e in state.ledger.entries if e.round == record.round]
        assert scalings == [pytest.approx(cfg.boost.scaling * multiple)] * 14  # 2 layers of 7 linears
    # replaying the ledger onto the untouched weights gives the trained model exactly
    trained = {n: p.detach().clone() for n, p in tiny_llama.named_parameters()}
    with torch.no_grad():
        for n, p in tiny_llama.named_parameters():
            p.copy_(initial[n])
    Merger(tiny_llama).apply_ledger(state.ledger)
    for n, p in tiny_llama.named_parameters():
        torch.testing.assert_close(p, trained[n], rtol=0, atol=1e-6)
