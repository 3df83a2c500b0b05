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
* "quality" draws k ≈ 2L/3 uniformly with B continued: 0.013–0.032 below Balanced's
  held-out loss on three data sets (within noise), 0.03–0.04 behind LoRA r=8, for about
  1.1× the step time and memory of the previous default.
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
        "tooltip": "k ≈ 2L/3 uniform, B continued, rank 8, κ = 20: a little lower loss than Balanced on "
                   "three data sets, for about 1.1× its step time and memory (docs/benchmarks.md)",
        "k_fraction": 2 / 3,
        "changes": {"boost": {"sampling": "uniform", "carry_b": True}, "train": {"round_warmup": 0}},
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
