import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from xgblora_engine.boosting.booster import BoosterLinear, attach_boosters, detach_boosters
from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord
from xgblora_engine.boosting.merge import Merger


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def randomize_b(boosters, seed=1, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in boosters.values():
            b.B.copy_(torch.randn(b.B.shape, generator=g) * scale)


def merge_round(model, boosters, ledger, merger, round_index=1):
    factors = {n: (*b.factors(), b.scaling) for n, b in boosters.items()}
    detach_boosters(model, boosters)
    ledger.record_round(RoundRecord(round_index, round_index, [0]), factors)
    merger.merge_modules(ledger, list(factors))


def llama_targets(model, layers):
    return [f"model.layers.{i}.{p}" for i in layers for p in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]


def test_fresh_booster_leaves_the_model_unchanged(tiny_llama):
    ids = torch.randint(0, 128, (2, 12))
    before = logits(tiny_llama, ids)
    attach_boosters(tiny_llama, llama_targets(tiny_llama, [1, 3]), rank=2, scaling=2.0, dropout=0.0, seed=0, round_index=1)
    assert torch.equal(before, logits(tiny_llama, ids))


def test_delta_weight_is_the_scaled_product(tiny_llama):
    boosters = attach_boosters(tiny_llama, llama_targets(tiny_llama, [0]), 3, 1.5, 0.0, 0, 1)
    randomize_b(boosters)
    b = next(iter(boosters.values()))
    assert torch.allclose(b.delta_weight(), 1.5 * b.B @ b.A)
    assert b.A.dtype == torch.float32 and b.B.dtype == torch.float32


def test_booster_init_is_reproducible(tiny_llama):
    first = attach_boosters(tiny_llama, llama_targets(tiny_llama, [0]), 1, 2.0, 0.0, seed=7, round_index=3)
    a1 = [b.A.detach().clone() for b in first.values()]
    detach_boosters(tiny_llama, first)
    second = attach_boosters(tiny_llama, llama_targets(tiny_llama, [0]), 1, 2.0, 0.0, seed=7, round_index=3)
    assert all(torch.equal(x, b.A) for x, b in zip(a1, second.values()))
    detach_boosters(tiny_llama, second)
    third = attach_boosters(tiny_llama, llama_targets(tiny_llama, [0]), 1, 2.0, 0.0, seed=7, round_index=4)
    assert not torch.equal(a1[0], next(iter(third.values())).A)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 0.03)])
def test_merge_equivalence(tiny_llama, dtype, atol):
    model = tiny_llama.to(dtype)
    ids = torch.randint(0, 128, (2, 16))
    fresh = logits(model, ids)
    boosters = attach_boosters(model, llama_targets(model, [0, 2]), 2, 2.0, 0.0, 0, 1)
    randomize_b(boosters)
    attached = logits(model, ids)
    merge_round(model, boosters, BoosterLedger(), Merger(model))
    assert not any(isinstance(m, BoosterLinear) for m in model.modules())
    merged = logits(model, ids)
    assert (attached - merged).abs().max() < atol
    # and the booster really changed something
    assert (attached - fresh).abs().max() > 10 * atol


def test_merge_equivalence_gpt2_conv1d():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()
    ids = torch.randint(0, 64, (1, 10))
    targets = ["transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_fc"]
    boosters = attach_boosters(model, targets, 2, 2.0, 0.0, 0, 1)
    randomize_b(boosters)
    attached = logits(model, ids)
    merge_round(model, boosters, BoosterLedger(), Merger(model))
    assert (attached - logits(model, ids)).abs().max() < 1e-5


def test_only_booster_factors_train(tiny_llama):
    tiny_llama.requires_grad_(False)
    boosters = attach_boosters(tiny_llama, llama_targets(tiny_llama, [1]), 1, 2.0, 0.0, 0, 1)
    trainable = [n for n, p in tiny_llama.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * len(boosters)
    assert all(n.endswith((".A", ".B")) for n in trainable)


def test_each_booster_is_made_on_the_device_of_its_linear(tiny_llama):
    from tests.engine.conftest import llama_device_map, place_with_hooks

    model = place_with_hooks(tiny_llama, llama_device_map(tiny_llama, later="meta"))
    boosters = attach_boosters(model, llama_targets(model, [1, 2]), 1, 2.0, 0.0, 0, 1)
    for name, booster in boosters.items():
        expected = "cpu" if ".layers.1." in name else "meta"
        assert booster.A.device.type == booster.B.device.type == expected


def test_the_offset_start_leaves_the_model_unchanged_and_merges_exactly(tiny_llama):
    """B starts random too, and the start B0·A0 is subtracted: attaching changes nothing,
    and after training the attached model equals the merged one."""
    from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord
    from xgblora_engine.boosting.merge import Merger

    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(0))
    before = tiny_llama(input_ids=ids).logits.detach()
    names = llama_targets(tiny_llama, [1, 2])
    boosters = attach_boosters(tiny_llama, names, 2, 2.0, 0.0, 0, 1, offset=True)
    assert torch.equal(tiny_llama(input_ids=ids).logits.detach(), before)
    b = next(iter(boosters.values()))
    assert b.B.abs().min() > 0 and b.A.grad is None
    loss = tiny_llama(input_ids=ids, labels=ids).loss
    loss.backward()
    assert b.A.grad.abs().sum() > 0 and b.B.grad.abs().sum() > 0  # both factors learn from the first step
    with torch.no_grad():
        for booster in boosters.values():
            booster.A.add_(0.01 * torch.randn_like(booster.A))
            booster.B.add_(0.01 * torch.randn_like(booster.B))
        attached = tiny_llama(input_ids=ids).logits
    factors = {n: (*x.factors(), x.scaling) for n, x in boosters.items()}
    assert all(a.shape[0] == 4 for a, _, _ in factors.values())  # rank 2r: trained factors and the start
    detach_boosters(tiny_llama, boosters)
    ledger = BoosterLedger()
    ledger.record_round(RoundRecord(1, 1, [1, 2]), factors)
    Merger(tiny_llama).merge_modules(ledger, names)
    with torch.no_grad():
        merged = tiny_llama(input_ids=ids).logits
    assert (attached - merged).abs().max() < 1e-5
