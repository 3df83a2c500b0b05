"""What a bf16 base loses when boosters are merged into it, with and without the fp32 ledger.

Trains a real XGBLoRA run (fp32, many short rounds), then builds the merged bf16 weights
three ways from the same original weights W0 and the same ledger:

* exact: W0 + Σ Δ in fp32 (the reference);
* ledger rebuild (the engine): bf16(W0 + Σ Δ), recomputed from W0 at every merge;
* naive in place: W ← bf16(W + Δ_t) after each round, as merging into the live bf16
  weight does — each round is rounded to bf16 on top of the last.

Reports the share of the total update that reaches the weights (its projection on the
exact update), the error of the applied update against the exact one (relative), and the held-out loss of each (computed in fp32, so only the weights differ).
The same is done for fp32 in place (the engine's policy for fp32 weights).

    python -m benchmarks.merge_precision [--model default] [--steps 100] [--quick]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from benchmarks.compare import chosen_lr
from benchmarks.harness import RESULTS, Method, add_common_flags, run_config, setup_from_args


def train_ledger(setup, method):
    import torch

    from xgblora_engine.boosting.trainer import BoostingTrainer
    from xgblora_engine.data.dataset import BatchStream, eval_batches
    from xgblora_engine.session import prepare

    cfg = run_config(method, setup)
    prepared = prepare(cfg, lambda e: None)
    model = prepared.loaded.model
    originals = {n: model.get_submodule(n).weight.detach().clone()
                 for names in prepared.targets_by_layer.values() for n in names}
    stream = BatchStream(prepared.data.train, cfg.train.batch_size, cfg.train.seed, prepared.pad_id)
    evals = lambda: eval_batches(prepared.data.eval, cfg.train.batch_size, prepared.pad_id)  # noqa: E731
    trainer = BoostingTrainer(model, prepared.targets_by_layer, stream, evals, cfg, prepared.k, lambda e: None)
    trainer.fit()
    torch.manual_seed(0)
    return prepared, originals, trainer.state.ledger, evals


def merged_weights(originals, ledger, how: str):
    import torch

    out = {}
    for name, w0 in originals.items():
        entries = ledger.entries_for(name)
        if not entries:
            continue
        deltas = [(e.scaling * e.B) @ e.A for e in entries]
        if how == "exact":
            out[name] = w0 + sum(deltas)
        elif how == "ledger-bf16":
            out[name] = (w0 + sum(deltas)).to(torch.bfloat16).float()
        else:  # naive in place, in bf16 or fp32
            dtype = torch.bfloat16 if how == "inplace-bf16" else torch.float32
            w = w0.to(dtype)
            for d in deltas:
                w = (w.float() + d).to(dtype)
            out[name] = w.float()
    return out


def measure(prepared, originals, ledger, evals) -> list[dict]:
    import torch

    from xgblora_engine.boosting.loss import mean_loss

    model = prepared.loaded.model
    exact = merged_weights(originals, ledger, "exact")
    update = torch.sqrt(sum(((exact[n] - originals[n]) ** 2).sum() for n in exact))
    rows = []
    for how in ("exact", "ledger-bf16", "inplace-bf16", "inplace-fp32"):
        weights = merged_weights(originals, ledger, how)
        # the update a variant applied: its weights minus its own base (bf16(W0) for bf16)
        applied = {n: w - (originals[n].to(torch.bfloat16).float() if "bf16" in how else originals[n])
                   for n, w in weights.items()}
        wanted = {n: exact[n] - originals[n] for n in weights}
        reached = sum((applied[n] * wanted[n]).sum() for n in weights) / update**2
        error = torch.sqrt(sum(((applied[n] - wanted[n]) ** 2).sum() for n in weights)) / update
        with torch.no_grad():
            for n, w in weights.items():
                model.get_submodule(n).weight.copy_(w)
        loss, _ = mean_loss(model, evals(), model.device)
        rows.append({"merge": how, "update_reached": float(reached), "update_error": float(error), "eval_loss": loss})
        print(json.dumps(rows[-1]), flush=True)
    with torch.no_grad():  # and the base itself, for scale
        for n, w in originals.items():
            model.get_submodule(n).weight.copy_(w)
    rows.append({"merge": "base (no update)", "update_reached": 0.0, "update_error": 1.0,
                 "eval_loss": mean_loss(model, evals(), model.device)[0]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    args = ap.parse_args()
    setup = setup_from_args(args, data="sample:unicode-names", steps=100, eval_every=0)
    method = Method("xgb-kappa5", lr=chosen_lr()["xgblora"], kappa=5, k_share=1 / 3)  # many rounds: many roundings
    if args.quick:
        setup = replace(setup, steps=4, eval_examples=4)
        method = replace(method, kappa=2)
    prepared, originals, ledger, evals = train_ledger(setup, method)
    rows = measure(prepared, originals, ledger, evals)
    name = "merge_precision_quick" if args.quick else "merge_precision"
    (RESULTS / f"{name}.json").write_text(json.dumps({"setup": vars(args), "rounds": len(ledger.rounds), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
