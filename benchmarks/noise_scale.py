"""The gradient noise scale of each bundled set: does the noisier set want the smaller step?

On the levers, the two sets disagree about the booster rate: python-topics gains from a
larger one, unicode-names loses. If the reason were gradient noise, the simple noise scale
B_noise = tr(Σ)/|G|² (McCandlish et al., 2018, "An empirical model of large-batch
training") would say so: at batch B, the best rate falls as 1/(1 + B_noise/B), so the two
sets' best rates would stand in the ratio of those factors.

Measured on the base model (the state every run starts from), over the weight gradients of
the target linears, from per-example gradients of the training batches (B = 4, the
benchmarks' batch): tr(Σ) is their sample covariance's trace, |G|² the squared batch mean
less tr(Σ)/B (unbiased). B_noise is the ratio of the sums over batches, and again on each
third of the batches for its spread.

    python -m benchmarks.noise_scale [--batches 24]

Writes results/noise_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.compare import DATASETS
from benchmarks.harness import RESULTS, Method, Setup, data_name, run_config

BATCH = 4


def per_example_gradients(model, params, batch):
    """Each example's gradient, scaled so that their mean is the batch gradient (the loss
    is normalised by the batch's target tokens, as in training)."""
    import torch

    from xgblora_engine.boosting.loss import count_targets, summed_loss

    n_targets, n = count_targets(batch["labels"]), batch["input_ids"].shape[0]
    rows = []
    for i in range(n):
        one = {key: value[i:i + 1] for key, value in batch.items()}
        grads = torch.autograd.grad(summed_loss(model, one) / n_targets * n, params)
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


def batch_terms(g) -> tuple[float, float]:
    """(tr Σ, |G|²) of one batch of per-example gradients, both unbiased."""
    n = g.shape[0]
    mean = g.mean(0)
    trace = float(((g - mean) ** 2).sum() / (n - 1))
    return trace, float(mean.square().sum()) - trace / n


def measure(data: str, seq_len: int, n_batches: int) -> dict:
    import torch

    from xgblora_engine.boosting.loss import batch_to
    from xgblora_engine.data.dataset import BatchStream
    from xgblora_engine.session import prepare

    torch.manual_seed(0)
    cfg = run_config(Method.engine_defaults("base"), Setup(data=data, seq_len=seq_len, batch=BATCH))
    prepared = prepare(cfg, lambda event: None)
    model = prepared.loaded.model.requires_grad_(False)
    params = [model.get_submodule(name).weight.requires_grad_(True)
              for names in prepared.targets_by_layer.values() for name in names]
    stream = BatchStream(prepared.data.train, BATCH, 0, prepared.pad_id)
    terms = [batch_terms(per_example_gradients(model, params, batch_to(stream.next_batch(), model.device)))
             for _ in range(n_batches)]
    third = n_batches // 3
    parts = [terms[i * third:(i + 1) * third] for i in range(3)]
    noise = _ratio(terms)
    return {"data": data, "batches": n_batches, "batch": BATCH, "noise_scale": noise,
            "noise_scale_thirds": [_ratio(p) for p in parts],
            "rate_factor": 1 / (1 + noise / BATCH)}


def _ratio(terms: list[tuple[float, float]]) -> float:
    return sum(t for t, _ in terms) / sum(g for _, g in terms)


def report(rows: list[dict]) -> str:
    lines = [f"| set | batches of {BATCH} | B_noise = tr(Σ)/|G|² | on each third of the batches | "
             "best rate ∝ 1/(1 + B_noise/B) |", "|:--|--:|--:|:--|--:|"]
    for r in rows:
        thirds = ", ".join(f"{x:.2f}" for x in r["noise_scale_thirds"])
        lines.append(f"| {data_name(r['data'])} | {r['batches']} | {r['noise_scale']:.2f} | {thirds} | "
                     f"{r['rate_factor']:.3f} |")
    if len(rows) == 2:
        a, b = rows
        lines += ["", f"Predicted ratio of the best rates ({data_name(a['data'])} / "
                  f"{data_name(b['data'])}): {a['rate_factor'] / b['rate_factor']:.2f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=24)
    args = parser.parse_args()
    rows = [measure(data, seq_len, args.batches) for data, (seq_len, _) in DATASETS.items()]
    (RESULTS / "noise_scale.json").write_text(json.dumps({"rows": rows}, indent=1))
    text = report(rows)
    (RESULTS / "noise_scale.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
