"""Method presets: fast / balanced / quality.

Where the numbers come from:
* k ≈ L/3 per round is the setting reported best for LLaMA3-8B (11 of 32 layers) and the
  engine's default (``sampling.default_k``); rank 1 is the paper's setting.
* benchmarks/results/depth_cost.json (SmolLM2-135M, k=10): a round boosting layers 20–29
  costs 0.66× the step time and 0.54× the activations of one boosting layers 0–9, so
  "fast" draws fewer layers, biased towards the top, where backward stops early.
* "quality" spreads layers over depth (stratified), boosts more of them, and gives each
  booster more steps before it merges.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "label": "Fast",
        "tooltip": "k ≈ L/6, top-biased layers (backward stops early: ~0.66× step time for top layers "
                   "in benchmarks/results/depth_cost.json), rank 1, κ = 10",
        "k_fraction": 1 / 6,
        "changes": {"boost": {"rank": 1, "sampling": "top-biased", "merge_every": 10}},
    },
    "balanced": {
        "label": "Balanced",
        "tooltip": "the engine defaults: k ≈ L/3 uniform (best reported for LLaMA3-8B), rank 1, κ = 10",
        "k_fraction": 1 / 3,
        "changes": {"boost": {"rank": 1, "sampling": "uniform", "merge_every": 10}},
    },
    "quality": {
        "label": "Quality",
        "tooltip": "k ≈ L/2 spread over depth (stratified), rank 2, κ = 20: each booster trains longer",
        "k_fraction": 1 / 2,
        "changes": {"boost": {"rank": 2, "sampling": "stratified", "merge_every": 20}},
    },
}


def preset_changes(name: str, n_layers: int | None) -> dict[str, dict[str, Any]]:
    preset = PRESETS[name]
    changes = {section: dict(values) for section, values in preset["changes"].items()}
    k = max(1, round(n_layers * preset["k_fraction"])) if n_layers else None
    changes["boost"]["layers_per_round"] = k
    changes["boost"]["layers"] = None
    return changes
