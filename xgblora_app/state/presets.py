"""Method presets: fast / balanced / quality.

Each one was measured side by side with LoRA r=8 (benchmarks/compare.py and
benchmarks/levers.py, tables in docs/benchmarks.md) with every setting below:

* rank 8 and κ = 20 in all three: rank 8 boosters lowered the held-out loss against rank 4
  on every seed of both bundled sets at the same step time and memory; κ = 20 lowered it
  against 10 (one seed) and halves the merges.
* "balanced" is the engine default: k ≈ L/2 drawn top-biased, each layer's B continued
  from where it stopped, no per-round warmup. Against the previous default (k ≈ L/3
  uniform, B from 0) it was lower on average on all five data sets, at about the same step
  time and live memory, because top-biased rounds stop backward higher.
* "fast" draws k ≈ L/6 top-biased with B restarted: a top-layer round costs 0.66× the
  step time (benchmarks/results/depth_cost.json); measured with a 2-step warmup per round.
* "quality" trains every layer every round (k = L) with A, B and the moments continued,
  which is LoRA r=8 merged into the weights every κ steps at the rate rule's rate: over
  three seeds below LoRA r=8's held-out loss on both bundled sets (−0.019 ± 0.037 and
  −0.015 ± 0.008, paired by seed) and level with it on two more (+0.012 ± 0.026,
  +0.002 ± 0.017), where the k ≈ 2L/3 uniform preset before it ended 0.03–0.04 behind;
  at about LoRA r=8's step time and live peak (0.90× and 0.99× in separate runs, 1.0–1.07×
  the step in one process; Balanced: 0.72× and 0.89× in separate runs, 0.85–0.97× the step
  in one process; benchmarks/results/preset_cost_iso-codes.md, adapter_overhead.md).
"""

from __future__ import annotations

from typing import Any

from xgblora_engine.config import BoostConfig, TrainConfig

# What every preset was measured with besides what it sets itself; set too, so a preset
# gives what was measured even after these were changed by hand.
MEASURED = {"boost": {"rank": 8, "merge_every": 20, "init": "kaiming", "carry": True, "line_search": False}}

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "label": "Fast",
        "tooltip": "k ≈ L/6, top-biased layers (backward stops early), B restarted each round, rank 8, "
                   "κ = 20: the cheapest rounds (docs/benchmarks.md)",
        "k_fraction": 1 / 6,
        "changes": {"boost": {"sampling": "top-biased", "carry_b": False}, "train": {"round_warmup": 2}},
    },
    "balanced": {
        "label": "Balanced",
        "tooltip": "the engine defaults: k ≈ L/2 top-biased, B continued, rank 8, κ = 20 (docs/benchmarks.md)",
        "k_fraction": None,  # the engine's own k: half the layers
        # read from the engine, so Balanced stays the defaults wherever they move
        "changes": {"boost": {"sampling": BoostConfig.sampling, "carry_b": BoostConfig.carry_b},
                    "train": {"round_warmup": TrainConfig.round_warmup}},
    },
    "quality": {
        "label": "Quality",
        "tooltip": "every layer every round (k = L), B continued, rank 8, κ = 20: held-out loss below LoRA "
                   "r=8's on two data sets and level on two more, at about its step time and memory "
                   "(Balanced: 0.7–0.97× the step time, 0.9× the memory; docs/benchmarks.md)",
        "k_fraction": 1.0,
        # with k = L the draw picks every layer whatever the sampling; top-biased is what was measured
        "changes": {"boost": {"sampling": "top-biased", "carry_b": True}, "train": {"round_warmup": 0}},
    },
}


def preset_changes(name: str, n_layers: int | None) -> dict[str, dict[str, Any]]:
    preset = PRESETS[name]
    own = preset["changes"]
    changes = {section: {**MEASURED.get(section, {}), **own.get(section, {})} for section in MEASURED.keys() | own.keys()}
    fraction = preset["k_fraction"]
    k = max(1, round(n_layers * fraction)) if n_layers and fraction else None
    changes["boost"]["layers_per_round"] = k
    changes["boost"]["layers"] = None
    return changes
