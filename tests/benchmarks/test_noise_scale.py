import torch

from benchmarks.noise_scale import batch_terms, per_example_gradients
from xgblora_engine.boosting.loss import IGNORE, count_targets, summed_loss


def test_the_noise_scale_estimate_finds_a_known_ratio():
    """Per-example gradients G + noise with tr(Σ) = d·σ² and |G|² = d: the ratio of the
    sums over many batches of four comes out at σ², though each batch's |G|² is biased
    upwards by tr(Σ)/B before the correction."""
    torch.manual_seed(0)
    d, sigma = 1000, 2.0
    G = torch.ones(d)
    terms = [batch_terms(G + sigma * torch.randn(4, d)) for _ in range(200)]
    ratio = sum(t for t, _ in terms) / sum(g for _, g in terms)
    assert abs(ratio - sigma ** 2) < 0.2


def test_per_example_gradients_average_to_the_batch_gradient(tiny_llama):
    model = tiny_llama.float().requires_grad_(False)
    params = [p.requires_grad_(True) for name, p in model.named_parameters() if name.endswith("proj.weight")]
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = mask[3, 6:] = 0  # padded examples of unequal length
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[:, :4] = IGNORE  # the prompt carries no loss
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    whole = torch.autograd.grad(summed_loss(model, batch) / count_targets(labels), params)
    mean = per_example_gradients(model, params, batch).mean(0)
    assert torch.allclose(mean, torch.cat([g.flatten() for g in whole]), atol=1e-5)
