import torch

from tests.engine.boosting.test_aim import weight_gradients
from tests.engine.boosting.test_trainer import ListStream, config, make_batches, targets
from xgblora_engine.boosting.probe import layer_gradient_norms
from xgblora_engine.boosting.trainer import BoostingTrainer
from xgblora_engine.protocol import StepMetrics


def test_layer_norms_equal_the_weight_gradients_computed_directly(tiny_llama):
    batch = make_batches(n=1)[0]
    layers = targets()
    names = [n for group in layers.values() for n in group]
    grads = weight_gradients(tiny_llama, batch, names)
    norms = layer_gradient_norms(tiny_llama.requires_grad_(False), batch, layers)
    for layer, group in layers.items():
        expected = torch.sqrt(sum(grads[n].double().square().sum() for n in group))
        assert abs(norms[layer] - float(expected)) < 1e-4 * float(expected), layer
    assert not any(p.grad is not None for p in tiny_llama.parameters())  # nothing kept


def test_a_gradient_drawn_run_trains_on_the_same_batches_and_records_its_draws(tiny_llama):
    cfg = config()
    cfg.boost.sampling = "gradient"
    batches = make_batches()
    stream, events = ListStream(batches), []
    BoostingTrainer(tiny_llama, targets(), stream, lambda: batches[:2], cfg, 2, events.append).fit()
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert len(steps) == 9 and stream.pos == 9  # the probe rewinds: no batch skipped
    assert all(len(e.layers) == 2 for e in steps)
