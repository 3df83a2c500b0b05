"""Step time and peak memory as functions of k (layers per round) and of sequence length,
with the preflight's analytic estimate on the same axes.

Each point runs in a fresh process (RSS never shrinks inside one): load the model, then
train a few rounds with the layers the engine would draw (uniform, seeded) on fixed
batches of exactly ``seq`` tokens, every position labelled, while sampling the peak.
The estimate is the worst draw (backward reaches layer 0), so it should sit at or above
the measured peak.

    python -m benchmarks.scaling [--model default] [--device auto] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from benchmarks.harness import RESULTS, ROOT, add_common_flags

K_GRID = [1, 5, 10, 20, 30]
SEQ_GRID = [64, 128, 256, 512]
DEFAULT_SEQ, DEFAULT_K, BATCH = 128, 10, 4


def measure(model: str, device: str, k: int, seq: int, rounds: int = 3, steps: int = 3) -> dict:
    import time

    import torch

    from xgblora_engine import memory
    from xgblora_engine.boosting.booster import attach_boosters, booster_parameters, detach_boosters
    from xgblora_engine.boosting.loss import summed_loss
    from xgblora_engine.boosting.sampling import sample_layers
    from xgblora_engine.config import RunConfig
    from xgblora_engine.models.loading import load_model
    from xgblora_engine.models.shape import shape_of
    from xgblora_engine.session import targets_by_layer

    cfg = RunConfig()
    cfg.model.name, cfg.model.device = model, device
    cfg.boost.layers_per_round, cfg.data.seq_len, cfg.train.batch_size = k, seq, BATCH
    loaded = load_model(cfg.model)
    net, dev = loaded.model.requires_grad_(False), loaded.model.device
    targets = targets_by_layer(net, None)
    k = min(k, len(targets))
    cfg.boost.layers_per_round = k
    torch.manual_seed(0)
    ids = torch.randint(0, net.config.vocab_size, (BATCH, seq), device=dev)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    estimate = memory.estimate(shape_of(net), cfg, dev.type, loaded.info.dtype, BATCH * seq, BATCH * seq)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    net.train()
    with memory.PeakRSS(every=0.01) as rss:
        for round_index in range(1, rounds + 1):
            layers = sample_layers(len(targets), k, 0, round_index, "uniform", None)
            boosters = attach_boosters(net, [n for i in layers for n in targets[i]], 1, 2.0, 0.0, 0, round_index)
            optimizer = torch.optim.AdamW(booster_parameters(boosters), lr=1e-4)
            for _ in range(steps):
                started = time.perf_counter()
                summed_loss(net, batch).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - started)
            detach_boosters(net, boosters)
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else rss.peak
    return {"k": k, "seq": seq, "batch": BATCH, "step_s": statistics.median(times[1:]), "peak": peak,
            "estimate": estimate.total, "parts": estimate.parts}


def run_point(model: str, device: str, k: int, seq: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--model", model, "--device", device,
                          "--point", json.dumps([k, seq])], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(rows_k: list[dict], rows_seq: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), dpi=110)
    for col, (rows, key, label) in enumerate([(rows_k, "k", "k (layers per round)"),
                                              (rows_seq, "seq", "sequence length (tokens)")]):
        xs = [r[key] for r in rows]
        axes[0, col].plot(xs, [r["step_s"] for r in rows], "o-")
        axes[0, col].set_ylabel("step time (s)")
        axes[1, col].plot(xs, [r["peak"] / 2**30 for r in rows], "o-", label="measured peak")
        axes[1, col].plot(xs, [r["estimate"] / 2**30 for r in rows], "s--", label="preflight estimate (worst draw)")
        axes[1, col].set_ylabel("peak memory (GiB)")
        axes[1, col].legend(fontsize=8)
        for ax in axes[:, col]:
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
    fig.suptitle(f"XGBLoRA r=1, batch {BATCH}: cost against k (seq {DEFAULT_SEQ}) and sequence length (k {DEFAULT_K})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(ap)
    ap.add_argument("--point", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        print(json.dumps(measure(args.model, args.device, *json.loads(args.point))))
        return
    k_grid, seq_grid = ([1, 5], [64]) if args.quick else (K_GRID, SEQ_GRID)
    rows_k = [run_point(args.model, args.device, k, DEFAULT_SEQ) for k in k_grid]
    rows_seq = [run_point(args.model, args.device, DEFAULT_K, s) for s in seq_grid]
    for r in rows_k + rows_seq:
        print(f"k {r['k']:>2} seq {r['seq']:>3}: step {r['step_s']:.3f} s, peak {r['peak'] / 2**20:.0f} MB, "
              f"estimate {r['estimate'] / 2**20:.0f} MB ({r['estimate'] / r['peak']:.2f}×)", flush=True)
    name = "scaling_quick" if args.quick else "scaling"
    (RESULTS / f"{name}.json").write_text(json.dumps({"model": args.model, "by_k": rows_k, "by_seq": rows_seq}, indent=1))
    plot(rows_k, rows_seq, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
