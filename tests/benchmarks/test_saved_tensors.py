"""Autograd's saved tensors by place, on a real tiny Llama: the boosters' own share, and the
base model's share that shrinks when backward stops at a higher layer."""

import torch

from benchmarks.saved_tensors import report, saved_by_place
from tests.conftest import build_tiny_llama
from xgblora_engine.boosting.booster import BoosterLinear, attach_boosters, detach_boosters
from xgblora_engine.models.targets import find_targets


def _saved(model, batch, layers):
    boosters = attach_boosters(model, find_targets(model, layers), 4, 2.0, 0.0, 0, 1)
    try:
        return saved_by_place(model, batch, lambda m: isinstance(m, BoosterLinear))
    finally:
        detach_boosters(model, boosters)


def test_boosters_save_their_paths_and_backward_from_a_higher_layer_keeps_less_of_the_base():
    model = build_tiny_llama().requires_grad_(False)
    ids = torch.randint(0, 128, (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    bottom, top = _saved(model, batch, [0]), _saved(model, batch, [3])
    tokens, hidden, inter = 32, 32, 64
    # at least the boosted layer's attention and MLP inputs (fp32), at most every linear's input and x·Aᵀ
    lower, upper = (2 * hidden + inter) * tokens * 4 / 2**20, (6 * hidden + inter + 7 * 4) * tokens * 4 / 2**20
    assert lower <= bottom["adapter paths"] <= upper and abs(top["adapter paths"] - bottom["adapter paths"]) < 1e-9
    base = {k: v for k, v in bottom.items() if k != "adapter paths"}
    base_top = {k: v for k, v in top.items() if k != "adapter paths"}
    assert sum(base_top.values()) < 0.5 * sum(base.values())  # backward passes through one layer, not four
    text = report([("bottom", bottom), ("top", top)], tokens, "tiny")
    assert "| bottom |" in text and "adapter paths" in text.splitlines()[2]


def test_recomputing_pass_through_layers_keeps_less_and_leaves_the_gradients_as_they_were():
    from benchmarks.saved_tensors import recompute_rows, recomputed

    model = build_tiny_llama().requires_grad_(False).train()
    ids = torch.randint(0, 128, (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    boosters = attach_boosters(model, find_targets(model, [0, 3]), 4, 2.0, 0.0, 0, 1)
    for b in boosters.values():  # B = 0 would give A no gradient to compare
        torch.nn.init.normal_(b.B)

    def gradients(indices):
        for b in boosters.values():
            b.A.grad = b.B.grad = None
        with recomputed(model, indices):
            saved_by_place(model, batch, lambda m: isinstance(m, BoosterLinear))
        return [g.clone() for b in boosters.values() for g in (b.A.grad, b.B.grad)]

    for mine, theirs in zip(gradients({1, 2}), gradients(set())):
        torch.testing.assert_close(mine, theirs)
    (none, mb_none, one), (middle, mb_middle, _), (every, mb_every, _) = recompute_rows(model, batch, [0, 3], 4, 1)
    assert (none, one, middle, every) == ("none recomputed", 1.0, "the 2 pass-through layers recomputed",
                                          "every layer from 0 recomputed")
    assert mb_every < mb_middle < mb_none
