"""The live data of one run (no Qt).

An event only joins an inbox as it arrives; ``flush`` takes the inbox in, once per
frame, so a flood of events costs the window one list append each. Arrays grow by
doubling, so taking an event in is O(1), and the plots take views of the filled part;
nothing is rebuilt per event. ``version`` and ``dirty`` tell the plots what changed since
they last drew.
"""

from __future__ import annotations

import math

import numpy as np

from xgblora_engine import protocol as P

IN_PROGRESS = 0.5  # heatmap value of a layer the round in progress trains (merged: 1)
SMOOTHING = 0.9  # EMA factor of the smoothed loss (debiased, so the first steps are not dragged to 0)


class Growable:
    def __init__(self, capacity: int = 256) -> None:
        self._data = np.empty(capacity, dtype=float)
        self.n = 0

    def append(self, value: float) -> None:
        if self.n == len(self._data):
            self._data = np.concatenate([self._data, np.empty(len(self._data))])
        self._data[self.n] = value
        self.n += 1

    def view(self) -> np.ndarray:
        return self._data[: self.n]

    def keep(self, n: int) -> None:
        self.n = min(self.n, n)

    def __len__(self) -> int:
        return self.n


def _none_to_nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


class TrainingSeries:
    GROUPS = ("loss", "eval", "memory", "speed", "heat", "samples")

    def __init__(self) -> None:
        self.inbox: list[P.Event] = []
        self.reset()

    def reset(self, n_layers: int = 0, total_rounds: int = 0) -> None:
        self.steps, self.loss, self.smooth = Growable(), Growable(), Growable()
        self.merge_steps, self.merge_loss = Growable(), Growable()
        self.eval_steps, self.eval_loss = Growable(), Growable()
        self.sample_steps, self.sample_f1 = Growable(), Growable()
        self.samples: list[P.SampleAnswers] = []  # every evaluation's answers, step 0 (the base model) first
        self.mem_steps, self.rss, self.allocated = Growable(), Growable(), Growable()
        self.speed_steps, self.tokens_per_s, self.lr = Growable(), Growable(), Growable()
        self.predicted_peak: int | None = None
        self.n_layers = n_layers
        self.total_steps = 0
        self.start_step = 0
        self.heat = np.zeros((max(1, total_rounds), max(1, n_layers)))
        self.rounds: list[list[int]] = []  # layers of each merged round, in order
        self.heat_live = 0  # the round in progress whose layers the heatmap shows (0: none)
        self.rolled_back: list[int] = []
        self._ema = 0.0
        self._ema_n = 0
        self.version = 0
        self.dirty = set(self.GROUPS)

    def clear(self) -> None:
        """Empty, with nothing waiting: a new run starts from here."""
        self.inbox.clear()
        self.reset()

    # --- feeding ------------------------------------------------------------------
    def add(self, event: P.Event) -> None:
        """Queue one event; it is taken in by the next ``flush``."""
        self.inbox.append(event)

    def extend(self, events) -> None:
        """Take a whole run's events in at once (a run reopened from its folder)."""
        self.inbox.extend(events)
        self.flush()

    def flush(self) -> bool:
        """Take in the queued events; returns whether anything plotted changed."""
        events, self.inbox = self.inbox, []
        changed = False
        for event in events:
            handler = getattr(self, f"_on_{type(event).__name__}", None)
            groups = handler(event) if handler is not None else None
            if groups:
                self.dirty.update(groups)
                changed = True
        if changed:
            self.version += 1
        return changed

    def _on_RunStarted(self, e: P.RunStarted):
        if e.start_step == 0 or not len(self.steps):
            predicted = self.predicted_peak
            self.reset(e.n_layers, e.total_rounds)
            self.predicted_peak = predicted  # the preflight came just before
        else:
            self._truncate(e.start_step)  # a resumed run trains the steps after its checkpoint again
            self._grow_heat(e.total_rounds, e.n_layers)
        self.total_steps, self.start_step = e.total_steps, e.start_step
        return self.GROUPS

    def _on_StepMetrics(self, e: P.StepMetrics):
        self.steps.append(e.step)
        self.loss.append(e.loss)
        if math.isfinite(e.loss):
            self._ema = SMOOTHING * self._ema + (1 - SMOOTHING) * e.loss
            self._ema_n += 1
        self.smooth.append(self._ema / (1 - SMOOTHING ** self._ema_n) if self._ema_n else math.nan)
        self.speed_steps.append(e.step)
        self.tokens_per_s.append(e.tokens_per_s)
        self.lr.append(e.lr)
        if e.round > len(self.rounds) and e.layers and self.heat_live != e.round:  # once per round
            self.heat_live = e.round
            self._grow_heat(e.round, max(e.layers) + 1)
            self.heat[e.round - 1, e.layers] = IN_PROGRESS
            return ("loss", "speed", "heat")
        return ("loss", "speed")

    def _on_RoundMerged(self, e: P.RoundMerged):
        self.rounds.append(list(e.layers))
        self.merge_steps.append(e.step)
        self.merge_loss.append(self.smooth.view()[-1] if len(self.smooth) else math.nan)
        self._grow_heat(e.round, max(e.layers, default=-1) + 1)
        self.heat[e.round - 1, :] = 0.0
        self.heat[e.round - 1, e.layers] = 1.0
        return ("loss", "heat")

    def _on_RoundRolledBack(self, e: P.RoundRolledBack):
        self.rolled_back.append(e.round)
        if e.round - 1 < len(self.heat):
            self.heat[e.round - 1, :] = 0.0
        self.heat_live = 0
        return ("loss", "heat")

    def _on_EvalResult(self, e: P.EvalResult):
        self.eval_steps.append(e.step)
        self.eval_loss.append(e.eval_loss)
        return ("eval",)

    def _on_SampleAnswers(self, e: P.SampleAnswers):
        self.samples.append(e)
        self.sample_steps.append(e.step)
        self.sample_f1.append(e.token_f1)
        return ("eval", "samples")

    def _on_MemorySample(self, e: P.MemorySample):
        self.mem_steps.append(e.step)
        self.rss.append(e.rss)
        self.allocated.append(_none_to_nan(e.allocated))
        if e.predicted_peak:
            self.predicted_peak = e.predicted_peak
        return ("memory",)

    def _on_PreflightResult(self, e: P.PreflightResult):
        self.predicted_peak = e.predicted_peak
        return ("memory",)

    # --- helpers ------------------------------------------------------------------
    def _grow_heat(self, rounds: int, n_layers: int) -> None:
        rows, cols = self.heat.shape
        if rounds > rows or n_layers > cols:
            grown = np.zeros((max(rows, rounds), max(cols, n_layers)))
            grown[:rows, :cols] = self.heat
            self.heat = grown
        self.n_layers = max(self.n_layers, n_layers)

    def _truncate(self, step: int) -> None:
        def keep(steps: Growable, *others: Growable) -> None:
            n = int(np.searchsorted(steps.view(), step, side="right"))
            for g in (steps, *others):
                g.keep(n)

        keep(self.steps, self.loss, self.smooth)
        keep(self.speed_steps, self.tokens_per_s, self.lr)
        keep(self.merge_steps, self.merge_loss)
        keep(self.eval_steps, self.eval_loss)
        keep(self.sample_steps, self.sample_f1)
        self.samples = self.samples[: len(self.sample_steps)]
        keep(self.mem_steps, self.rss, self.allocated)
        self.rounds = self.rounds[: len(self.merge_steps)]
        self.heat[len(self.rounds):, :] = 0.0
        self.heat_live = 0
        finite = self.loss.view()[np.isfinite(self.loss.view())]
        self._ema_n = len(finite)
        self._ema = self.smooth.view()[-1] * (1 - SMOOTHING ** self._ema_n) if self._ema_n else 0.0

    @property
    def last_step(self) -> int:
        return int(self.steps.view()[-1]) if len(self.steps) else self.start_step
