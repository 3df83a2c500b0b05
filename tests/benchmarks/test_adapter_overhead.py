"""The timing compares like with like: PEFT's LoRA and the boosters, on a real tiny Llama,
compute the same function and train the same number of values."""

from types import SimpleNamespace

import torch

from benchmarks.adapter_overhead import BOOSTERS, PEFT, twin_models
from tests.conftest import build_tiny_llama
from xgblora_engine.boosting.loss import summed_loss
from xgblora_engine.models.targets import find_targets, layer_index_of


def test_the_twins_compute_the_same_function_with_the_same_trainable_values():
    model = build_tiny_llama()
    targets_by_layer = {}
    for name in find_targets(model):
        targets_by_layer.setdefault(layer_index_of(name), []).append(name)
    models = twin_models(model, SimpleNamespace(targets_by_layer=targets_by_layer))
    ids = torch.randint(0, 128, (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    peft_loss, boosted_loss = (summed_loss(models[name], batch) for name in (PEFT, BOOSTERS))
    torch.testing.assert_close(peft_loss, boosted_loss)
    with torch.no_grad():
        base = summed_loss(build_tiny_llama().train(), batch)
    assert abs(float(peft_loss.detach() - base)) > 1e-6  # the adapters do change the output
    counts = [sum(p.numel() for p in models[name].parameters() if p.requires_grad) for name in (PEFT, BOOSTERS)]
    rank_8 = sum(8 * (m.in_features + m.out_features) for m in find_targets(build_tiny_llama()).values())
    assert counts == [rank_8, rank_8]


def test_the_defaults_copy_boosts_only_the_layers_the_defaults_draw():
    from benchmarks.adapter_overhead import defaults_model
    from xgblora_engine.boosting.booster import BoosterLinear
    from xgblora_engine.boosting.sampling import sample_layers

    model = build_tiny_llama()
    prepared = SimpleNamespace(targets_by_layer={i: [] for i in range(4)})
    boosted, drawn = defaults_model(model, prepared, 2)
    assert drawn == sample_layers(4, 2, 0, 2, "top-biased")
    boosted_layers = {layer_index_of(n) for n, m in boosted.named_modules() if isinstance(m, BoosterLinear)}
    assert boosted_layers == set(drawn) and not any(isinstance(m, BoosterLinear) for m in model.modules())


def test_timers_wait_for_the_gpu_and_not_for_the_cpu(monkeypatch):
    """CUDA queues kernels and returns at once: a step timed without waiting for them would
    measure their launch. A parameter that says it lives on cuda:0 stands in for the GPU."""
    from benchmarks.saved_tensors import settle

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    settle(build_tiny_llama())
    assert waited == []
    on_gpu = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=torch.device("cuda", 0))]))
    settle(on_gpu)
    assert waited == [torch.device("cuda", 0)]
