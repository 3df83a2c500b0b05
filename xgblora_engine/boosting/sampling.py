"""Which layers train in a round: drawn from (seed, round) alone, so any process that
knows those two numbers (a resumed run, another data-parallel rank) draws the same set.

Strategies trade quality against cost. Autograd stops at the lowest layer that has a
trainable parameter, so a round whose layers are all high is cheaper; uniform draws of
k of L layers almost always include a low one and forfeit that saving.
"""

from __future__ import annotations

import random

from xgblora_engine.errors import UserError


def round_rng(seed: int, round_index: int) -> random.Random:
    # An explicit integer mix: Python's hash of a tuple is not stable across processes.
    return random.Random(seed * 1_000_003 + round_index * 7_919 + 17)


def sample_layers(n_layers: int, k: int, seed: int, round_index: int,
                  strategy: str = "uniform", explicit: list[int] | None = None,
                  weights: list[float] | None = None) -> list[int]:
    """Sorted layer indices boosted in ``round_index`` (1-based). The ``gradient``
    strategy also needs each layer's weight (its gradient norm, from boosting/probe.py)."""
    if strategy == "explicit":
        return check_explicit(explicit or [], n_layers)
    check_k(k, n_layers)
    rng = round_rng(seed, round_index)
    if strategy == "gradient":
        if weights is None:
            raise UserError("layers drawn by gradient norm are chosen as the run goes",
                            "each round measures the gradient first; the Train panel's heatmap shows the draws")
        return _weighted(weights, k, rng)
    if strategy == "uniform":
        return sorted(rng.sample(range(n_layers), k))
    if strategy == "stratified":
        return _stratified(n_layers, k, rng)
    if strategy == "top-biased":
        return _top_biased(n_layers, k, rng)
    if strategy == "cyclic":
        return _cyclic(n_layers, k, seed, round_index)
    raise UserError(f"unknown layer sampling strategy '{strategy}'",
                    "choose uniform, cyclic, stratified, top-biased, gradient or give --layers")


def check_k(k: int, n_layers: int) -> None:
    if not 1 <= k <= n_layers:
        raise UserError(f"layers per round k={k} is out of range: the model has {n_layers} layers",
                        f"use --layers-per-round between 1 and {n_layers}")


def check_explicit(layers: list[int], n_layers: int) -> list[int]:
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise UserError(f"layer indices {bad} do not exist: the model has layers 0..{n_layers - 1}",
                        "fix the --layers list")
    if not layers:
        raise UserError("the explicit layer list is empty", "give layer indices, e.g. --layers 20,25,29")
    return sorted(set(layers))


def _stratified(n_layers: int, k: int, rng: random.Random) -> list[int]:
    """One layer from each of k contiguous strata: every depth gets its share."""
    bounds = [round(i * n_layers / k) for i in range(k + 1)]
    return [rng.randrange(bounds[i], bounds[i + 1]) for i in range(k)]


def _cyclic(n_layers: int, k: int, seed: int, round_index: int) -> list[int]:
    """Without replacement across rounds: each cycle of ⌈L/k⌉ rounds walks through one
    random permutation of the layers, so every layer is boosted once per cycle instead of
    by chance (uniform draws leave some layers out for many rounds and repeat others).
    When k does not divide L, a cycle's last round tops up from the permutation's start."""
    per_cycle = -(-n_layers // k)
    cycle, slot = divmod(round_index - 1, per_cycle)
    order = list(range(n_layers))
    round_rng(seed, -1 - cycle).shuffle(order)  # negative: never the rng of a round
    chosen = order[slot * k:(slot + 1) * k]
    return sorted(chosen + order[:k - len(chosen)])


def _top_biased(n_layers: int, k: int, rng: random.Random) -> list[int]:
    """Draw without replacement with weight growing linearly with depth.

    Every layer can still be drawn (weight ≥ 1), but deep rounds are more common, so
    the average backward pass is shorter.
    """
    pool = list(range(n_layers))
    chosen = []
    for _ in range(k):
        weights = [i + 1 for i in pool]
        pick = rng.choices(range(len(pool)), weights=weights)[0]
        chosen.append(pool.pop(pick))
    return sorted(chosen)


def _weighted(weights: list[float], k: int, rng: random.Random) -> list[int]:
    """k layers without replacement, each draw with probability ∝ weight (Efraimidis and
    Spirakis: the k largest keys u^(1/w)). A layer of weight 0 comes last; a tiny floor
    keeps every layer drawable, as in the other strategies."""
    floor = max(max(weights), 1e-30) * 1e-3
    keys = [rng.random() ** (1.0 / max(w, floor)) for w in weights]
    return sorted(sorted(range(len(weights)), key=keys.__getitem__, reverse=True)[:k])


SHARE_ROUNDS = 4000  # the shares to about ±0.01


def draw_shares(n_layers: int, k: int, strategy: str) -> list[float]:
    """How often each layer is drawn, as a share of rounds: k/L for the strategies that
    treat layers alike (and for gradient draws, whose weights are measured as the run
    goes); top-biased draws are counted over many rounds of a fixed seed (their inclusion
    probabilities have no closed form), the same every time it is asked."""
    if strategy != "top-biased":
        return [k / n_layers] * n_layers
    counts = [0] * n_layers
    for round_index in range(1, SHARE_ROUNDS + 1):
        for layer in _top_biased(n_layers, k, round_rng(-7, round_index)):
            counts[layer] += 1
    return [max(c, 1) / SHARE_ROUNDS for c in counts]


def default_k(n_layers: int) -> int:
    """Half the layers. With top-biased draws and B carried this learned more per step than
    a third drawn uniformly (the paper's best for LLaMA3-8B, 11 of 32) at about the same step
    time and live memory: top-biased rounds stop backward higher (docs/benchmarks.md)."""
    return max(1, round(n_layers / 2))


def resolve_k(explicit: list[int] | None, k: int | None, n_layers: int | None) -> int | None:
    """Layers trained per round: the explicit list's size, else the chosen k, else the
    default for the model's depth (None while the depth is not known yet)."""
    if explicit is not None:
        return len(set(explicit))
    if k is not None:
        return k
    return default_k(n_layers) if n_layers is not None else None


def checked_k(explicit: list[int] | None, k: int | None, n_layers: int) -> int:
    """``resolve_k`` for a loaded model, rejecting layers the model does not have."""
    if explicit is not None:
        check_explicit(explicit, n_layers)
    resolved = resolve_k(explicit, k, n_layers)
    check_k(resolved, n_layers)
    return resolved
