import copy

import torch

from tests.engine.boosting.test_trainer import ListStream, make_batches, targets
from xgblora_engine.boosting.aim import GradientAim
from xgblora_engine.boosting.booster import KAIMING_ROW_NORM, attach_boosters
from xgblora_engine.boosting.loss import count_targets, summed_loss
from xgblora_engine.boosting.trainer import BoostingTrainer
from xgblora_engine.config import RunConfig

NAMES = ["model.layers.1.mlp.down_proj", "model.layers.2.self_attn.q_proj", "model.layers.3.mlp.up_proj"]


def one_batch(tokens_per_row=6, rows=2):
    # Few labelled tokens: G = Σ δ·xᵀ has rank ≤ their number, within the sketch's width,
    # so the sketch recovers G's top directions exactly.
    batch = make_batches(n=1, batch=rows, seq=tokens_per_row + 3)[0]
    batch["labels"][:, :3] = -100
    return batch


def weight_gradients(model, batch, names):
    """The weight gradient of each named linear, computed directly."""
    model = copy.deepcopy(model).requires_grad_(False)
    for n in names:
        model.get_submodule(n).weight.requires_grad_(True)
    (summed_loss(model, batch) / count_targets(batch["labels"])).backward()
    return {n: model.get_submodule(n).weight.grad for n in names}


def aimed(model, batch, rank=2, pool=1):
    model.requires_grad_(False)
    boosters = attach_boosters(model, NAMES, rank, 2.0, 0.0, seed=0, round_index=1)
    aim = GradientAim(boosters, seed=0, round_index=1, pool=pool)
    (summed_loss(model, batch) / count_targets(batch["labels"])).backward()
    aim.apply(lambda tensors: None)
    return boosters


def test_a_spans_the_top_right_singular_subspace_of_the_weight_gradient(tiny_llama):
    batch = one_batch()
    grads = weight_gradients(tiny_llama, batch, NAMES)
    boosters = aimed(tiny_llama, batch)
    for name, g in grads.items():
        a = boosters[name].A.detach()
        top = torch.linalg.svd(g, full_matrices=False).Vh[:2]  # 2 × in
        # A's rows lie in the top-2 subspace: projecting them onto it keeps all of them
        assert torch.allclose(a @ top.t() @ top, a, atol=1e-4), name
        assert torch.allclose(a.norm(dim=1), torch.full((2,), KAIMING_ROW_NORM), atol=1e-5)
        # and B's gradient for the new A is the one autograd would give: scaling·G·Aᵀ
        assert torch.allclose(boosters[name].B.grad, 2.0 * g @ a.t(), rtol=1e-3, atol=1e-7), name
        assert not boosters[name].A.grad.any()


def test_a_wider_pool_draws_other_directions_inside_the_top_subspace(tiny_llama):
    batch = one_batch()
    grads = weight_gradients(tiny_llama, batch, NAMES)
    boosters = aimed(tiny_llama, batch, rank=1, pool=3)
    for name, g in grads.items():
        a = boosters[name].A.detach()
        vh = torch.linalg.svd(g, full_matrices=False).Vh
        assert torch.allclose(a @ vh[:3].t() @ vh[:3], a, atol=1e-4), name
        assert float((a @ vh[:1].t()).abs().squeeze()) < 0.99 * float(a.norm())  # not just the top one


def test_aiming_leaves_the_model_unchanged(tiny_llama):
    batch = one_batch()
    before = tiny_llama(input_ids=batch["input_ids"]).logits
    boosters = aimed(tiny_llama, batch)
    assert all(not b.B.any() for b in boosters.values())
    with torch.no_grad():
        after = tiny_llama(input_ids=batch["input_ids"]).logits
    assert torch.equal(before.detach(), after)


def train_one_round(model, init, batches, steps=4):
    cfg = RunConfig()
    cfg.boost.rank, cfg.boost.merge_every, cfg.boost.init = 2, steps, init
    cfg.train.max_steps, cfg.train.lr, cfg.train.eval_every, cfg.train.round_warmup = steps, 5e-3, 0, 0
    losses = []
    trainer = BoostingTrainer(model, targets(), ListStream(batches), lambda: batches, cfg, 4,
                              lambda e: losses.append(e.eval_loss) if hasattr(e, "eval_loss") else None)
    trainer.fit()
    return losses


def test_the_gradient_start_lowers_the_loss_faster_than_kaiming(tiny_llama):
    batches = make_batches(n=1, batch=4, seq=16)  # one fixed batch: the first steps' progress
    kaiming = train_one_round(copy.deepcopy(tiny_llama), "kaiming", batches)
    gradient = train_one_round(copy.deepcopy(tiny_llama), "gradient", batches)
    assert kaiming[0] == gradient[0]
    assert gradient[-1] < kaiming[-1]


def test_the_gradient_start_is_reproducible(tiny_llama):
    batches = make_batches(n=2, batch=2, seq=12)
    first = train_one_round(copy.deepcopy(tiny_llama), "gradient", batches)
    second = train_one_round(copy.deepcopy(tiny_llama), "gradient", batches)
    assert first == second
