"""Method presets: fast / balanced / quality.

Each one was measured side by side with LoRA and full fine-tuning (benchmarks/compare.py,
table in docs/benchmarks.md); the ablations (benchmarks/ablations.py) chose the settings:

* rank 8 and κ = 20 in all three: rank 8 boosters lowered the held-out loss against rank 4
  on every seed of both bundled sets (docs/benchmarks.md, the levers) at the same step time
  and memory; κ = 20 lowered it against 10 (one seed) and halves the merges.
* "balanced" is the engine default: k ≈ L/3 uniform, the setting reported best for
  LLaMA3-8B and the point where more layers stopped paying for their memory (k 10→20:
  2.26→2.16 for +5 % peak memory, k 20→30 no better).
* "fast" draws k ≈ L/6 top-biased: a top-layer round costs 0.66× the step time
  (benchmarks/results/depth_cost.json) and top-biased sampling lost nothing against uniform.
* "quality" draws k ≈ 2L/3: on three seeds of both sets, 0.064 and 0.052 below the
  defaults' held-out loss (every seed), about half the gap to LoRA r=8, for 1.1× their step
  time and peak memory (docs/benchmarks.md, the levers).
"""

from __future__ import annotations

from typing import Any

# What every preset was measured with besides its k and sampling; set too, so a preset
# gives what was measured even after these were changed by hand.
MEASURED = {"boost": {"rank": 8, "merge_every": 20, "init": "kaiming", "carry": True, "carry_b": False,
                      "line_search": False},
            "train": {"round_warmup": 2}}

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "label": "Fast",
        "tooltip": "k ≈ L/6, top-biased layers (backward stops early), rank 8, κ = 20: "
                   "the cheapest rounds (docs/benchmarks.md)",
        "k_fraction": 1 / 6,
        "changes": {"boost": {"sampling": "top-biased"}},
    },
    "balanced": {
        "label": "Balanced",
        "tooltip": "the engine defaults: k ≈ L/3 uniform, rank 8, κ = 20 (docs/benchmarks.md)",
        "k_fraction": None,  # the engine's own k: about a third
        "changes": {"boost": {"sampling": "uniform"}},
    },
    "quality": {
        "label": "Quality",
        "tooltip": "k ≈ 2L/3, rank 8, κ = 20: about half the loss gap to LoRA r=8 closed, "
                   "for about 1.1× the step time and memory of Balanced (docs/benchmarks.md)",
        "k_fraction": 2 / 3,
        "changes": {"boost": {"sampling": "uniform"}},
    },
}


def preset_changes(name: str, n_layers: int | None) -> dict[str, dict[str, Any]]:
    preset = PRESETS[name]
    changes = {section: {**values, **preset["changes"].get(section, {})} for section, values in MEASURED.items()}
    fraction = preset["k_fraction"]
    k = max(1, round(n_layers * fraction)) if n_layers and fraction else None
    changes["boost"]["layers_per_round"] = k
    changes["boost"]["layers"] = None
    return changes
