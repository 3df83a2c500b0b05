"""The XGBLoRA round loop.

    for each round:  sample layers → attach boosters → κ optimizer steps → merge → record → report

Each phase is one short method below. The trainer knows nothing of files or
processes: it reads batches, changes the model, and hands events to ``emit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from xgblora_engine import protocol as P
from xgblora_engine.boosting.aim import GradientAim
from xgblora_engine.boosting.booster import (
    BoosterLinear,
    attach_boosters,
    booster_parameters,
    detach_boosters,
)
from xgblora_engine.boosting.carry import CarryStore
from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord
from xgblora_engine.boosting.line_search import best_multiple
from xgblora_engine.boosting.loss import (
    batch_to,
    count_targets,
    input_device,
    mean_loss,
    summed_loss,
)
from xgblora_engine.boosting.merge import Merger
from xgblora_engine.boosting.probe import layer_gradient_norms
from xgblora_engine.boosting.sampling import sample_layers
from xgblora_engine.boosting.schedule import layer_rate_factors, run_schedule
from xgblora_engine.config import RunConfig
from xgblora_engine.control import RunControl
from xgblora_engine.distributed import SingleProcess
from xgblora_engine.errors import UserError


class RoundDiverged(Exception):
    """The round's loss, gradients or booster weights stopped being finite."""


@dataclass
class TrainerState:
    """Everything that, with the frozen base model and the data, determines the run."""

    step: int = 0  # optimizer steps completed
    ledger: BoosterLedger = field(default_factory=BoosterLedger)
    last_loss: float | None = None
    last_eval_loss: float | None = None
    carried: CarryStore = field(default_factory=CarryStore)  # boost.carry: A and moments per module
    live: CarryStore = field(default_factory=CarryStore)  # a round a Stop cut short: A, B and moments
    live_round: int = 0  # which round ``live`` is (0: none)
    live_lr_factor: float = 1.0  # its learning-rate factor (< 1 after a NaN retry)


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    tokens: int
    seconds: float


class BoostingTrainer:
    def __init__(self, model: nn.Module, targets_by_layer: dict[int, list[str]], stream,
                 eval_batches: Callable[[], object], cfg: RunConfig, k: int,
                 emit: Callable[[object], None], control: RunControl | None = None,
                 state: TrainerState | None = None,
                 on_round_end: Callable[[int], None] | None = None, dist=None) -> None:
        self.model = model.requires_grad_(False)  # only boosters ever train
        self.targets_by_layer = targets_by_layer
        self.n_layers = len(targets_by_layer)
        self.stream = stream
        self.eval_batches = eval_batches
        self.cfg = cfg
        self.k = k
        self.emit = emit
        self.control = control or RunControl()
        self.state = state or TrainerState()
        self.device = input_device(model)  # a sharded model's layers sit on other GPUs too
        self.schedule = run_schedule(cfg, k, self.n_layers)
        self.peak_lr = self.schedule.peak_lr
        self.layer_rates = layer_rate_factors(cfg.train.lr_rule, self.n_layers, k, cfg.boost.sampling)
        self.merger = Merger(model)
        self.on_round_end = on_round_end or (lambda round_index: None)
        self.dist = dist or SingleProcess()  # data-parallel collectives; identities in one process
        self.stopped = False
        self.on_stop_in_round = lambda round_index: None  # the session checkpoints the round in progress
        self.on_evaluate = lambda step, round_index: None  # e.g. sample answers, with the model as evaluated
        if self.state.ledger.entries:  # resumed: put merged rounds back into the weights
            self.merger.apply_ledger(self.state.ledger)
        self.state.carried.place(model)
        self.state.live.place(model)  # loaded on the CPU: the moments must sit where their parameters do

    # --- the run -------------------------------------------------------------
    def fit(self) -> TrainerState:
        if self.state.step == 0:
            self.evaluate()
        while self.state.step < self.schedule.total_steps and not self.stopped:
            self.run_round(self.schedule.round_of(self.state.step))
        if not self.stopped:
            self.evaluate()
        return self.state

    def run_round(self, round_index: int) -> None:
        layers = self.sample(round_index)
        resumed = self.state.live_round == round_index  # a Stop cut this round short: continue it
        lr_factor = self.state.live_lr_factor if resumed else 1.0
        for attempt in (1, 2):
            stream_state, start_step = self.stream.state(), self.state.step
            boosters = self.attach(round_index, layers)
            optimizer = self.optimizer(boosters)
            if resumed:
                self.state.live.restore_factors(boosters)
                self.state.live.restore_moments(optimizer, boosters)
                self.forget_live()
                resumed = False
            try:
                round_seconds = self.train_round(boosters, optimizer, round_index, lr_factor)
            except RoundDiverged as exc:
                detach_boosters(self.model, boosters)
                self.stream.load_state(stream_state)
                self.state.step = start_step
                retry = self.cfg.train.nan_retry_lr_factor if attempt == 1 else None
                self.emit(P.RoundRolledBack(round=round_index, step=start_step, reason=str(exc),
                                            retry_lr_factor=retry))
                if retry is None:
                    raise UserError(
                        f"round {round_index} diverged twice ({exc}); nothing from it was merged",
                        f"lower the learning rate (now {self.cfg.train.lr:g}, {self.peak_lr:.3g} per booster) or the booster scale (alpha), "
                        "then resume from the last checkpoint") from None
                lr_factor *= retry
                continue
            if self.stopped:  # mid-round: keep the booster as it is, unmerged, for the resume
                if self.state.step > self.schedule.round_steps(round_index).start:
                    self.state.live.keep(boosters, optimizer, with_b=True)
                    self.state.live_round, self.state.live_lr_factor = round_index, lr_factor
                    self.on_stop_in_round(round_index)
                detach_boosters(self.model, boosters)
                return
            if self.cfg.boost.carries:
                self.state.carried.keep(boosters, optimizer, with_b=self.cfg.boost.carry_b)
            self.merge(boosters, round_index, layers, lr_factor, round_seconds)
            self.on_round_end(round_index)
            return

    def forget_live(self) -> None:
        self.state.live, self.state.live_round, self.state.live_lr_factor = CarryStore(), 0, 1.0

    # --- phases --------------------------------------------------------------
    def sample(self, round_index: int) -> list[int]:
        b = self.cfg.boost
        if self.state.live_round == round_index:  # a round cut short by a Stop keeps its layers
            return sorted({_layer_of(name, self.targets_by_layer) for name in self.state.live.modules()})
        weights = self.probe() if b.sampling == "gradient" else None
        layers = sample_layers(self.n_layers, self.k, self.cfg.train.seed, round_index, b.sampling,
                               b.layers, weights)
        self.dist.check_same(layers, f"the layers of round {round_index}")
        return layers

    def probe(self) -> list[float]:
        """Each layer's gradient norm on the round's first batch, which the round then
        trains on as usual (the stream is rewound)."""
        return layer_gradient_norms(self.model, self.peek_batch(), self.targets_by_layer, self.dist.all_reduce_tensors)

    def peek_batch(self) -> dict[str, torch.Tensor]:
        """The stream's next batch, left in the stream for training to take."""
        position = self.stream.state()
        batch = batch_to(self.stream.next_batch(), self.device)
        self.stream.load_state(position)
        return batch

    def attach(self, round_index: int, layers: list[int]) -> dict[str, BoosterLinear]:
        b = self.cfg.boost
        targets = [name for layer in layers for name in self.targets_by_layer[layer]]
        boosters = attach_boosters(self.model, targets, b.rank, b.scaling, b.dropout,
                                   self.cfg.train.seed, round_index, offset=b.init == "offset")
        if b.carries:
            self.state.carried.restore_factors(boosters)
            for name in self.state.carried.with_b(boosters):  # carry_b: continue from the kept B
                boosters[name].start_here()
        return boosters

    def train_round(self, boosters: dict[str, BoosterLinear], optimizer: torch.optim.Optimizer,
                    round_index: int, lr_factor: float) -> float:
        params = booster_parameters(boosters)
        layers = sorted({_layer_of(name, self.targets_by_layer) for name in boosters})
        started = time.perf_counter()
        steps = self.schedule.round_steps(round_index)
        for step in steps:
            if step < self.state.step:
                continue
            self.control.wait_if_paused()
            if self.dist.any(self.control.should_stop(step)):  # every rank stops at the same step
                self.stopped = True
                break
            lr = self.schedule.lr(step) * lr_factor
            aim = self.aim(boosters, round_index) if step == steps.start else None
            try:
                result = self.optimizer_step(optimizer, params, lr, aim)
            finally:
                if aim is not None:
                    aim.close()
            self.state.step = step + 1
            self.state.last_loss = result.loss
            self.emit(P.StepMetrics(step=step + 1, round=round_index, loss=result.loss, lr=lr,
                                    grad_norm=result.grad_norm, layers=layers, seconds=result.seconds,
                                    tokens=result.tokens, tokens_per_s=result.tokens / max(result.seconds, 1e-9)))
            if self.cfg.train.eval_every and self.state.step % self.cfg.train.eval_every == 0 \
                    and self.state.step < self.schedule.total_steps:
                self.evaluate(round_index)
        if not all(b.is_finite() for b in boosters.values()):
            raise RoundDiverged("booster weights became NaN/inf")
        return time.perf_counter() - started

    def optimizer(self, boosters: dict[str, BoosterLinear]) -> torch.optim.Optimizer:
        """The round's AdamW, with the carried moments of layers drawn before (boost.carry)
        or fresh; B may train faster than A (LoRA+'s ratio), and each layer at its own rate
        (the "drawn" rule)."""
        t = self.cfg.train
        by_layer: dict[int, list[BoosterLinear]] = {}
        for name, b in boosters.items():
            by_layer.setdefault(_layer_of(name, self.targets_by_layer), []).append(b)
        groups = [{"params": [getattr(b, factor) for b in layer_boosters],
                   "lr_scale": self.layer_rates[layer] * (t.lr_ratio_b if factor == "B" else 1.0)}
                  for factor in ("A", "B") for layer, layer_boosters in sorted(by_layer.items())]
        optimizer = torch.optim.AdamW(groups, lr=self.peak_lr, weight_decay=t.weight_decay)
        if self.cfg.boost.carries:
            self.state.carried.restore_moments(optimizer, boosters)
        return optimizer

    def aim(self, boosters: dict[str, BoosterLinear], round_index: int) -> GradientAim | None:
        """Sketches the round's first gradient to start each A along it (boost.init=gradient),
        or only the A of modules that have no booster to continue (gradient-first)."""
        b = self.cfg.boost
        if b.init not in ("gradient", "gradient-first"):
            return None
        if b.carries:  # gradient-first: a module's later boosters continue its first
            boosters = {name: bst for name, bst in boosters.items() if name not in self.state.carried.by_module}
        return GradientAim(boosters, self.cfg.train.seed, round_index, b.init_pool) if boosters else None

    def optimizer_step(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], lr: float,
                       aim: GradientAim | None = None) -> StepResult:
        """One optimizer step over grad_accum micro-batches, loss normalised per target token."""
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        micro = [batch_to(self.stream.next_batch(), self.device) for _ in range(self.cfg.train.grad_accum)]
        # Normalise by the target tokens of the whole step, across every micro-batch and
        # every rank: the gradient is then the one of a single big batch.
        n_targets = max(1, self.dist.sum_int(sum(count_targets(b["labels"]) for b in micro)))
        self.model.train()
        loss_sum = 0.0
        for batch in micro:
            loss = summed_loss(self.model, batch) / n_targets
            loss.backward()
            loss_sum += float(loss.detach())
        self.dist.all_reduce_grads(params)
        if aim is not None:  # the round's first step: re-aim A, B's gradient follows
            aim.apply(self.dist.all_reduce_tensors)
        loss_sum = self.dist.sum_float(loss_sum)
        max_norm = self.cfg.train.max_grad_norm or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
            optimizer.zero_grad(set_to_none=True)
            raise RoundDiverged(f"loss {loss_sum:.4g}, gradient norm {grad_norm:.4g}")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = self.dist.sum_int(int(sum(int(b["attention_mask"].sum()) for b in micro)))
        return StepResult(loss_sum, grad_norm, tokens, time.perf_counter() - started)

    def merge(self, boosters: dict[str, BoosterLinear], round_index: int, layers: list[int],
              lr_factor: float, round_seconds: float) -> None:
        started = time.perf_counter()
        multiple = 1.0
        if self.cfg.boost.line_search:  # on a batch the round has not trained on
            multiple = best_multiple(self.model, boosters, self.peek_batch(), self.dist.sum_float)
            for b in boosters.values():
                b.scaling *= multiple
        factors = {name: (*b.factors(), b.scaling) for name, b in boosters.items()}
        norm = math.sqrt(sum(float(b.delta_weight().square().sum()) for b in boosters.values()))
        detach_boosters(self.model, boosters)
        self.state.ledger.record_round(RoundRecord(round_index, self.state.step, layers, lr_factor, norm), factors)
        self.merger.merge_modules(self.state.ledger, list(boosters))
        self.emit(P.RoundMerged(round=round_index, step=self.state.step, layers=layers, modules=len(boosters),
                                booster_norm=norm, merge_seconds=time.perf_counter() - started,
                                round_seconds=round_seconds, update_multiple=multiple))

    def evaluate(self, round_index: int = 0) -> float | None:
        self.model.eval()
        loss, count = mean_loss(self.model, self.eval_batches(), self.device)
        if count == 0:
            return None
        self.state.last_eval_loss = loss
        self.emit(P.EvalResult(step=self.state.step, round=round_index, eval_loss=loss, n_tokens=count))
        self.on_evaluate(self.state.step, round_index)
        return loss


def _layer_of(name: str, targets_by_layer: dict[int, list[str]]) -> int:
    for layer, names in targets_by_layer.items():
        if name in names:
            return layer
    raise KeyError(name)
