"""Learning rate: a global decay over the whole run times an optional warmup in every round.

A round that starts cold (a fresh booster with zeroed Adam moments, when nothing is
carried) takes over-large first steps; ramping the LR over ``round_warmup`` steps
(ReLoRA's jagged schedule) tames them. The defaults carry A, B and the moments, so they
need none (``round_warmup = 0``: one cosine over the run, as plain LoRA's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xgblora_engine.boosting.sampling import draw_shares


def booster_lr(lr: float, rank: int, k: int, n_layers: int, rule: str = "scaled") -> float:
    """The boosters' peak learning rate for rank r and k of L layers per round.

    Adam moves every factor value by about lr per step, so one step changes a boosted
    module by about scale·lr·√(r·out/3) and the model by √k times that: the change per
    step grows as √(k·r). "scaled" divides it out, lr·√(L/(k·r)), so one ``lr`` (the rate
    of a rank-1 booster on every layer) carries across r and k without a new sweep.
    "linear" scales with L/k instead, lr·(L/k)/√r: a round trains k of L layers, so Adam's
    first-order loss decrease per step (lr·Σ|g| over the trained values) matches training
    every layer only if the rate grows by L/k. "fixed" takes ``lr`` as it is.
    "drawn" is "scaled" per layer, with the layer's own draw share p_l for k/L
    (``layer_rate_factors``); this is its mean, the rate of a layer drawn k/L of the rounds.
    """
    if rule == "fixed":
        return lr
    if rule == "linear":
        return lr * (n_layers / k) / math.sqrt(rank)
    return lr * math.sqrt(n_layers / (k * rank))


def layer_rate_factors(rule: str, n_layers: int, k: int, sampling: str) -> list[float]:
    """Each layer's rate over ``booster_lr``'s. The "drawn" rule trains layer l at
    lr·√(1/(p_l·r)): a layer drawn in fewer rounds moves further when it is, so that
    top-biased draws, which pick the top layer in four rounds of five and the lowest in
    one of twenty, do not leave the low layers nearly where they started."""
    if rule != "drawn":
        return [1.0] * n_layers
    return [math.sqrt((k / n_layers) / p) for p in draw_shares(n_layers, k, sampling)]


def lr_rule_text(lr: float, rank: int, k: int, n_layers: int, rule: str = "scaled") -> str:
    """How ``booster_lr`` got its value, for the Method panel and the train log."""
    if rule == "fixed":
        return "as given"
    if rule == "linear":
        return f"lr·(L/k)/√r = {lr:g}·({n_layers}/{k})/√{rank}"
    if rule == "drawn":
        return f"lr·√(1/(p·r)) per layer, p its share of the draws; this at p = k/L = {k}/{n_layers}"
    return f"lr·√(L/(k·r)) = {lr:g}·√({n_layers}/({k}·{rank}))"


@dataclass(frozen=True)
class Schedule:
    peak_lr: float
    total_steps: int
    steps_per_round: int
    round_warmup: int = 2
    decay: str = "cosine"
    min_ratio: float = 0.1

    def round_of(self, step: int) -> int:
        """1-based round that optimizer step ``step`` (0-based) belongs to."""
        return step // self.steps_per_round + 1

    @property
    def total_rounds(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_round)

    def round_steps(self, round_index: int) -> range:
        start = (round_index - 1) * self.steps_per_round
        return range(start, min(start + self.steps_per_round, self.total_steps))

    def global_factor(self, step: int) -> float:
        if self.decay == "constant" or self.total_steps <= 1:
            return 1.0
        progress = step / (self.total_steps - 1)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_ratio + (1 - self.min_ratio) * cosine

    def warmup_factor(self, step: int) -> float:
        in_round = step % self.steps_per_round
        if in_round >= self.round_warmup:
            return 1.0
        return (in_round + 1) / (self.round_warmup + 1)

    def lr(self, step: int) -> float:
        return self.peak_lr * self.global_factor(step) * self.warmup_factor(step)


def run_schedule(cfg, k: int, n_layers: int) -> Schedule:
    """The schedule of a run's settings (a RunConfig) on a model of ``n_layers`` boosting
    ``k`` a round: what the trainer and the demo engine follow."""
    t = cfg.train
    peak = booster_lr(t.lr, cfg.boost.rank, k, n_layers, t.lr_rule)
    return Schedule(peak, t.max_steps, cfg.boost.merge_every, t.round_warmup, t.schedule)
