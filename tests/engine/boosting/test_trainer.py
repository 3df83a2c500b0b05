import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tests.engine.conftest import llama_device_map, place_with_hooks
from xgblora_engine import protocol as P
from xgblora_engine.boosting import trainer as trainer_module
from xgblora_engine.boosting.booster import attach_boosters, booster_parameters, detach_boosters
from xgblora_engine.boosting.loss import summed_loss
from xgblora_engine.boosting.schedule import Schedule, layer_rate_factors
from xgblora_engine.boosting.trainer import BoostingTrainer
from xgblora_engine.config import RunConfig
from xgblora_engine.errors import UserError

PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


class ListStream:
    """Cycles through fixed batches; its state is the position (resumable like BatchStream)."""

    def __init__(self, batches):
        self.batches, self.pos = batches, 0

    def next_batch(self):
        batch = self.batches[self.pos % len(self.batches)]
        self.pos += 1
        return batch

    def state(self):
        return {"pos": self.pos}

    def load_state(self, state):
        self.pos = state["pos"]


def make_batches(n=6, batch=2, seq=12, vocab=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        labels = ids.clone()
        labels[:, : seq // 3] = -100  # a prompt part without loss
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def targets(n_layers=4):
    return {i: [f"model.layers.{i}.{p}" for p in PROJ] for i in range(n_layers)}


def config(**train):
    cfg = RunConfig()
    cfg.boost.rank, cfg.boost.merge_every = 2, 3
    cfg.train.max_steps, cfg.train.lr, cfg.train.eval_every = 9, 1e-2, 0
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def make_trainer(model, cfg, k=2, events=None, batches=None):
    batches = batches or make_batches()
    events = events if events is not None else []
    return BoostingTrainer(model, targets(), ListStream(batches), lambda: batches[:2], cfg, k, events.append)


def test_rounds_merge_and_lower_the_loss(tiny_llama):
    events = []
    trainer = make_trainer(tiny_llama, config(), events=events)
    state = trainer.fit()
    merged = [e for e in events if isinstance(e, P.RoundMerged)]
    evals = [e.eval_loss for e in events if isinstance(e, P.EvalResult)]
    assert [e.round for e in merged] == [1, 2, 3] and state.step == 9
    assert len(state.ledger.rounds) == 3 and all(len(r.layers) == 2 for r in state.ledger.rounds)
    assert evals[-1] < evals[0]
    assert not any(p.requires_grad for p in tiny_llama.parameters())


def test_lora_special_case_matches_peft(tiny_llama):
    """One round on every layer (T = 1, k = L) is plain LoRA: same losses, same merged weights."""
    cfg = config(max_steps=6, round_warmup=2)
    cfg.boost.merge_every, cfg.boost.alpha = 6, 4.0
    cfg.train.lr_rule = "fixed"  # PEFT trains at the rate given
    batches = make_batches()
    peft_base = copy.deepcopy(tiny_llama)

    events = []
    BoostingTrainer(tiny_llama, targets(), ListStream(batches), lambda: [], cfg, 4, events.append).fit()
    ours = [e.loss for e in events if isinstance(e, P.StepMetrics)]

    init = attach_boosters(copy.deepcopy(peft_base), [n for v in targets().values() for n in v], 2, 2.0, 0.0, 0, 1)
    peft_model = get_peft_model(peft_base, LoraConfig(r=2, lora_alpha=4.0, lora_dropout=0.0, target_modules=[p.split(".")[-1] for p in PROJ]))
    with torch.no_grad():
        for name, booster in init.items():
            layer = peft_model.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(booster.A)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=0.0)
    sched = Schedule(cfg.train.lr, 6, 6, 2, "cosine")
    stream, theirs = ListStream(batches), []
    inner = peft_model.base_model.model
    for step in range(6):
        for g in opt.param_groups:
            g["lr"] = sched.lr(step)
        batch = stream.next_batch()
        n = int((batch["labels"][:, 1:] != -100).sum())
        loss = summed_loss(inner, batch) / n
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        opt.step()
        opt.zero_grad()
        theirs.append(float(loss.detach()))
    assert ours == pytest.approx(theirs, abs=1e-5)
    merged = peft_model.merge_and_unload()
    for name in init:
        assert torch.allclose(merged.get_submodule(name).weight, tiny_llama.get_submodule(name).weight, atol=1e-5)


def test_nan_round_is_rolled_back_and_retried(tiny_llama, monkeypatch):
    calls = {"n": 0}
    real = trainer_module.summed_loss

    def flaky(model, batch):
        calls["n"] += 1
        loss = real(model, batch)
        return loss * float("nan") if calls["n"] == 4 else loss  # first step of round 2

    monkeypatch.setattr(trainer_module, "summed_loss", flaky)
    events = []
    state = make_trainer(tiny_llama, config(), events=events).fit()
    rolled = [e for e in events if isinstance(e, P.RoundRolledBack)]
    assert len(rolled) == 1 and rolled[0].round == 2 and rolled[0].retry_lr_factor == 0.5
    assert [r.lr_factor for r in state.ledger.rounds] == [1.0, 0.5, 1.0]
    assert state.step == 9
    assert all(torch.isfinite(p).all() for p in tiny_llama.parameters())


def test_round_that_diverges_twice_stops_with_a_clear_message(tiny_llama, monkeypatch):
    real = trainer_module.summed_loss
    monkeypatch.setattr(trainer_module, "summed_loss", lambda m, b: real(m, b) * float("nan"))
    before = {n: p.clone() for n, p in tiny_llama.named_parameters()}
    with pytest.raises(UserError, match="round 1 diverged twice"):
        make_trainer(tiny_llama, config()).fit()
    assert all(torch.equal(before[n], p) for n, p in tiny_llama.named_parameters())


def test_backward_stops_at_the_lowest_boosted_layer(tiny_llama):
    """A layer's output only joins the autograd graph from the lowest boosted layer up."""
    tiny_llama.requires_grad_(False)
    in_graph = {}
    for i, layer in enumerate(tiny_llama.model.layers):
        layer.register_forward_hook(lambda m, args, out, i=i: in_graph.__setitem__(
            i, (out[0] if isinstance(out, tuple) else out).requires_grad))
    batch = make_batches(1)[0]
    for low, expected in ((3, {3}), (2, {2, 3}), (0, {0, 1, 2, 3})):
        boosters = attach_boosters(tiny_llama, targets()[low], 1, 2.0, 0.0, 0, 1)
        summed_loss(tiny_llama, batch).backward()
        detach_boosters(tiny_llama, boosters)
        assert {i for i, g in in_graph.items() if g} == expected


def test_merge_overhead_is_reported(tiny_llama):
    events = []
    make_trainer(tiny_llama, config(), events=events).fit()
    merged = [e for e in events if isinstance(e, P.RoundMerged)]
    assert all(e.merge_seconds >= 0 and e.round_seconds > 0 and math.isfinite(e.booster_norm) for e in merged)
    assert all(e.booster_norm > 0 for e in merged)


# --- layers on several devices (a model sharded over GPUs) -------------------------
def test_training_through_accelerate_s_per_layer_hooks_changes_nothing(tiny_llama):
    """The hooks a sharded model carries, every execution device the CPU: same losses,
    same ledger as the plain model."""
    hooked = place_with_hooks(copy.deepcopy(tiny_llama), llama_device_map(tiny_llama))
    runs = []
    for model in (tiny_llama, hooked):
        events = []
        state = make_trainer(model, config(), events=events).fit()
        runs.append(([e.loss for e in events if isinstance(e, P.StepMetrics)], state.ledger))
    (plain_losses, plain_ledger), (hooked_losses, hooked_ledger) = runs
    assert hooked_losses == plain_losses
    assert all(torch.equal(a.B, b.B) for a, b in zip(plain_ledger.entries, hooked_ledger.entries))


def test_batches_go_to_the_input_embeddings_and_targets_follow_the_logits(tiny_llama):
    """LM head on another device (meta stands in for a second GPU): the loss is computed
    there, with the targets moved to it, instead of failing on mixed devices."""
    model = place_with_hooks(tiny_llama, {"lm_head": "meta"})
    trainer = make_trainer(model, config())
    assert trainer.device == torch.device("cpu")
    loss = summed_loss(model, make_batches(1)[0])
    assert loss.device.type == "meta" and loss.dim() == 0


def test_carry_starts_a_layer_drawn_again_from_its_last_a_and_moments(tiny_llama):
    cfg = config()
    cfg.boost.layers, cfg.boost.sampling, cfg.boost.carry, cfg.boost.carry_b = [1, 2], "explicit", True, False
    trainer = make_trainer(tiny_llama, cfg)
    started, attach = [], trainer.attach

    def attach_and_look(round_index, layers):
        boosters = attach(round_index, layers)
        started.append({name: (b.A.detach().clone(), b.B.detach().clone()) for name, b in boosters.items()})
        return boosters

    trainer.attach = attach_and_look
    state = trainer.fit()
    first_round = {e.module: e.A for e in state.ledger.entries if e.round == 1}
    for name, (a, b) in started[1].items():
        assert torch.equal(a, first_round[name]) and not b.any()  # the last A, and B at 0
    assert state.carried.modules() == set(first_round)
    moment_steps = {float(v) for k, v in state.carried.tensors.items() if k.endswith(".step")}
    assert moment_steps == {9.0}  # Adam counted on through three rounds of three steps


def test_saved_boosters_are_placed_where_their_modules_live(tiny_llama):
    """A resumed state is loaded on the CPU; on a GPU its moments must move to the GPU, or
    AdamW fails on mixed devices. A model on the meta device stands in for the GPU."""
    from xgblora_engine.boosting.carry import CarryStore
    from xgblora_engine.boosting.trainer import TrainerState

    name = "model.layers.1.mlp.up_proj"
    saved = {f"{name}::A": torch.zeros(1, 32), f"{name}::A.exp_avg": torch.zeros(1, 32)}
    state = TrainerState(carried=CarryStore(dict(saved)), live=CarryStore(dict(saved)), live_round=1)
    batches = make_batches()
    BoostingTrainer(tiny_llama.to("meta"), targets(), ListStream(batches), lambda: batches[:2], config(), 2,
                    lambda e: None, state=state)
    for store in (state.carried, state.live):
        assert {t.device.type for t in store.tensors.values()} == {"meta"}


def test_without_carry_every_round_starts_fresh(tiny_llama):
    cfg = config()
    cfg.boost.layers, cfg.boost.sampling, cfg.boost.carry = [1, 2], "explicit", False
    state = make_trainer(tiny_llama, cfg).fit()
    assert not state.carried


def test_carry_b_continues_each_layer_as_if_never_merged(tiny_llama):
    """With B carried too, merging changes nothing: three rounds of three steps on every
    layer give the losses and weights of one round of nine."""
    def run(model, kappa):
        cfg = config(round_warmup=0)
        cfg.boost.layers, cfg.boost.sampling, cfg.boost.merge_every = [0, 1, 2, 3], "explicit", kappa
        cfg.boost.carry = cfg.boost.carry_b = True
        events = []
        make_trainer(model, cfg, k=4, events=events).fit()
        return [e.loss for e in events if isinstance(e, P.StepMetrics)], model

    rounds, merged = run(copy.deepcopy(tiny_llama), 3)
    single, reference = run(tiny_llama, 9)
    assert rounds == pytest.approx(single, abs=1e-5)
    for (name, w), w_ref in zip(merged.named_parameters(), reference.parameters()):
        assert torch.allclose(w, w_ref, atol=1e-5), name


def test_carry_b_starts_a_layer_drawn_again_unchanged(tiny_llama):
    """The kept B is subtracted at the start: attaching it leaves the logits as they were."""
    cfg = config(max_steps=3)
    cfg.boost.layers, cfg.boost.sampling, cfg.boost.carry, cfg.boost.carry_b = [1, 2], "explicit", True, True
    trainer = make_trainer(tiny_llama, cfg)
    trainer.fit()
    ids = make_batches()[0]["input_ids"]
    with torch.no_grad():
        before = tiny_llama(input_ids=ids).logits
        boosters = trainer.attach(2, [1, 2])
        after = tiny_llama(input_ids=ids).logits
    assert all(b.B.abs().sum() > 0 for b in boosters.values())  # B resumed, not zero
    assert torch.allclose(before, after, atol=1e-6)


def test_gradient_first_aims_a_module_once_and_later_boosters_continue_it(tiny_llama):
    """boost.init=gradient-first: round 1 aims every A (not kaiming's); a layer drawn again
    starts from its last A, and only a layer drawn for the first time is aimed."""
    cfg = config()
    cfg.boost.layers, cfg.boost.sampling, cfg.boost.init = [1, 2], "explicit", "gradient-first"
    assert cfg.boost.carries
    trainer = make_trainer(tiny_llama, cfg)
    aimed, started, aim, attach = [], [], trainer.aim, trainer.attach

    def aim_and_look(boosters, round_index):
        found = aim(boosters, round_index)
        aimed.append(set(found.boosters) if found else set())
        return found

    def attach_and_look(round_index, layers):
        boosters = attach(round_index, layers)
        started.append({name: b.A.detach().clone() for name, b in boosters.items()})
        return boosters

    trainer.aim, trainer.attach = aim_and_look, attach_and_look
    state = trainer.fit()
    assert aimed == [set(targets()[1] + targets()[2]), set(), set()]
    first_round = {e.module: e.A for e in state.ledger.entries if e.round == 1}
    kaiming = attach_boosters(copy.deepcopy(tiny_llama), targets()[1], 2, 1.0, 0.0, 0, 1)
    for name in targets()[1]:  # round 1 trained an aimed A, not the kaiming draw it attached with
        assert torch.equal(started[0][name], kaiming[name].A.detach())
        assert not torch.allclose(first_round[name], kaiming[name].A.detach(), atol=1e-2)
    for name, a in started[1].items():  # round 2 continues round 1's A
        assert torch.equal(a, first_round[name])


def test_the_drawn_rule_trains_each_layer_at_its_own_rate(tiny_llama):
    cfg = config(lr_rule="drawn")
    cfg.boost.sampling = "top-biased"
    trainer = make_trainer(tiny_llama, cfg)
    boosters = trainer.attach(1, [0, 3])
    optimizer = trainer.optimizer(boosters)
    trainer.optimizer_step(optimizer, booster_parameters(boosters), 1e-2)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    low, high = boosters["model.layers.0.mlp.up_proj"], boosters["model.layers.3.mlp.up_proj"]
    factors = layer_rate_factors("drawn", 4, 2, "top-biased")
    assert rate[id(low.A)] == pytest.approx(1e-2 * factors[0]) and rate[id(low.B)] == rate[id(low.A)]
    assert rate[id(high.A)] == pytest.approx(1e-2 * factors[3])
    assert factors[0] > 1 > factors[3]  # layer 0 is drawn least, so it moves furthest when it is
