"""The preflight's analytic estimate: whether a run fits, device by device.

The analytic estimate adds up what a step holds at its peak:

* weights: parameters × bytes per parameter (fp32 4, bf16/fp16 2, int8 ≈1, nf4 ≈0.56)
* boosters: k layers × their targets × r·(in+out) fp32 values × 4 (value, grad, 2 Adam moments)
* carried boosters (boost.carry): every layer's last A and both factors' moments, at most
  3·r·(in+out) fp32 values a target
* merged originals: the CPU copy of each boosted bf16/fp16 linear's W0 (host memory; counted
  on CPU runs; fp32 weights take merges in place and need none)
* activations: tokens × (layers reached × a frozen layer's values + k × a boosted layer's
  extra values) × bytes. The worst round samples layer 0, so backward reaches every layer.
  A llama-style block that backward passes through holds about 11·hidden + 3·intermediate
  values a token; a boosted one holds about 8·hidden + 3·intermediate more: the booster
  paths' saved inputs (2·hidden + intermediate, counted with saved-tensor hooks) and the
  input gradients its seven linears add in backward. Fitted to the process's measured
  peak on SmolLM2 at k = 10, 20 and 30 (benchmarks/preflight_accuracy.py): without the
  boosted term the estimate fell to 0.90× the peak at k = L. With checkpointing only the
  block inputs stay, plus one boosted block recomputed.
* logits: labelled tokens × vocab × fp32 × 3 (logits, log-softmax, gradient)
* runtime: the CUDA context and allocator slack, or the Python/torch process on CPU.

The measured trial (session.measure_peaks) runs real optimizer steps on the longest batch
with the deepest layer set and reads the device's peak (CUDA) or samples the process RSS
(CPU). What the estimate needs to know of a model is read by models/shape.py.

A model sharded over GPUs is checked GPU by GPU, each against its own free memory: its
weights are those of the layers placed there, its activations those of its layers (all
reached in the worst round), its boosters and Adam state those of min(k, its layers)
layers (the worst draw puts every sampled layer on one GPU), the logits only on the GPU
of the LM head, and each GPU pays its own CUDA runtime.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field

from xgblora_engine.boosting.sampling import resolve_k
from xgblora_engine.config import update
from xgblora_engine.payloads import DeviceCheck, Remedy, Verdict

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
QUANT_BYTES = {"4bit": 0.56, "8bit": 1.06}  # nf4 with double-quant stats; int8 with row scales
CUDA_RUNTIME = 600 * 2**20
CPU_RUNTIME = 450 * 2**20
TIGHT, FITS = 1.0, 0.85  # fraction of available memory


# --- the analytic estimate ---------------------------------------------------
@dataclass
class Shape:
    """What the estimate needs to know about a model (from its config, no weights)."""

    n_params: int
    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    linear_params_per_layer: int
    linear_dims_per_layer: int  # Σ (in + out) over a layer's target linears


@dataclass
class Estimate:
    parts: dict[str, int]
    device: str
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def estimate(shape: Shape, cfg, device: str, dtype: str, labelled_tokens: int | None = None,
             tokens: int | None = None) -> Estimate:
    """Peak memory of a training step, in parts. ``cfg`` is a RunConfig with k resolved;
    ``tokens`` is the longest batch's size (batch × its padded length), which is less than
    batch × seq_len when the data is shorter than the limit."""
    b, t, d = cfg.boost, cfg.train, cfg.data
    quant = cfg.model.quantize
    act_bytes = BYTES[dtype]
    weight_per_param = QUANT_BYTES.get(quant, BYTES[dtype])
    linear_params = shape.linear_params_per_layer * shape.n_layers
    weights = (shape.n_params - linear_params) * BYTES[dtype] + linear_params * weight_per_param
    k = resolve_k(b.layers, b.layers_per_round, shape.n_layers)
    booster = k * b.rank * shape.linear_dims_per_layer * 4 * 4
    tokens = tokens if tokens is not None else t.batch_size * d.seq_len
    frozen_layer = 11 * shape.hidden + 3 * shape.intermediate
    boosted_extra = 8 * shape.hidden + 3 * shape.intermediate
    if cfg.model.gradient_checkpointing:
        per_token = shape.n_layers * shape.hidden + frozen_layer + boosted_extra
    else:
        per_token = shape.n_layers * frozen_layer + k * boosted_extra
    activations = tokens * per_token * act_bytes
    labelled = labelled_tokens if labelled_tokens is not None else tokens
    logits = labelled * shape.vocab * 4 * 3
    parts = {"weights": int(weights), "boosters + optimizer": int(booster),
             "activations": int(activations), "logits": int(logits)}
    if b.carries:  # every layer's last A and Adam moments: at most 3·r·(in+out) fp32 values a module
        parts["carried boosters"] = int(shape.n_layers * b.rank * shape.linear_dims_per_layer * 3 * 4)
    if device == "cpu":
        # the CPU copies of original weights kept for exact merges live in the same RAM
        # (bf16/fp16 only: fp32 weights take merges in place)
        keeps_originals = quant == "none" and dtype != "fp32"
        parts["merge originals"] = int(min(1.0, k / shape.n_layers * 3) * linear_params * BYTES[dtype]) if keeps_originals else 0
        parts["runtime"] = CPU_RUNTIME
    else:
        parts["runtime"] = CUDA_RUNTIME + int(0.1 * (activations + logits))
    return Estimate(parts, device)


# --- per device: a model sharded over GPUs --------------------------------------
@dataclass
class DeviceShare:
    """What one device holds of a model."""

    device: str  # "cpu", "cuda:1"
    layers: int  # decoder layers whose weights are here
    params: int  # parameters here, layers and the rest (embeddings, norm, LM head)
    lm_head: bool  # the logits are computed here


def share_shape(shape: Shape, share: DeviceShare) -> Shape:
    """The part of the model on one device, as a model of its own for ``estimate``."""
    return Shape(share.params, share.layers, shape.hidden, shape.intermediate,
                 shape.vocab if share.lm_head else 0, shape.linear_params_per_layer,
                 shape.linear_dims_per_layer if share.layers else 0)


def estimate_share(shape: Shape, cfg, share: DeviceShare, dtype: str, labelled_tokens: int | None = None,
                   tokens: int | None = None) -> Estimate:
    """Peak memory of one device; boosters for min(k, its layers) layers (the worst draw)."""
    k = resolve_k(cfg.boost.layers, cfg.boost.layers_per_round, shape.n_layers)
    local = deepcopy(cfg)
    local.boost.layers, local.boost.layers_per_round = None, max(1, min(k, share.layers))
    kind = "cuda" if share.device.startswith("cuda") else "cpu"
    est = estimate(share_shape(shape, share), local, kind, dtype, labelled_tokens, tokens)
    est.device = share.device
    return est


LATER = ("merge originals", "carried boosters")  # parts that grow after a trial's steps


def device_checks(shape: Shape, cfg, shares: list[DeviceShare], dtype: str, available_on, labelled: int | None = None,
                  tokens: int | None = None, measured: dict[str, int] | None = None) -> list[DeviceCheck]:
    """Each device's predicted peak against its own free memory (``available_on(device)``).
    A measured trial peak replaces the estimate, plus what only accumulates later: the
    merge originals and the carried boosters of every layer drawn so far (the trial trains
    one round's boosters and carries nothing)."""
    checks = []
    for share in shares:
        est = estimate_share(shape, cfg, share, dtype, labelled, tokens)
        peak = (measured or {}).get(share.device)
        predicted = est.total if peak is None else peak + sum(est.parts.get(p, 0) for p in LATER)
        avail = available_on(share.device)
        checks.append(DeviceCheck(device=share.device, predicted_peak=int(predicted), available=int(avail),
                                  verdict=verdict(predicted, avail), parts=est.parts, measured_peak=peak))
    return checks


def tightest(checks: list[DeviceCheck]) -> DeviceCheck:
    """The device closest to (or furthest past) its limit: it decides the verdict."""
    return max(checks, key=lambda c: c.predicted_peak / max(1, c.available))


# --- verdict and remedies ----------------------------------------------------
def verdict(predicted: int, avail: int) -> Verdict:
    if predicted <= FITS * avail:
        return "fits"
    if predicted <= TIGHT * avail:
        return "tight"
    return "wont_fit"


def remedies(shape: Shape, cfg, device: str, dtype: str, labelled: int | None,
             share: DeviceShare | None = None, tokens: int | None = None) -> list[Remedy]:
    """Concrete changes, each with the bytes it saves (on ``share``'s device when the
    model is sharded), largest saving first. ``labelled`` and ``tokens`` are the ones the
    verdict was computed with, so a saving is never measured against a larger peak
    (batch × the full sequence length) than the one the user is shown."""

    def cost(c, lab: int | None, tok: int | None) -> int:
        if share is not None:
            return estimate_share(shape, c, share, dtype, lab, tok).total
        return estimate(shape, c, device, dtype, lab, tok).total

    base = cost(cfg, labelled, tokens)
    options = []

    def consider(label: str, changes: dict) -> None:
        trial = update(deepcopy(cfg), changes)
        limit = trial.train.batch_size * trial.data.seq_len  # a batch's tokens after the change, at most
        if tokens is None:
            tok, ratio = None, limit / (cfg.train.batch_size * cfg.data.seq_len)
        else:  # data shorter than the limit keeps its length
            tok = min(limit, tokens * trial.train.batch_size // cfg.train.batch_size)
            ratio = tok / tokens
        lab = int(labelled * ratio) if labelled is not None else None
        saved = base - cost(trial, lab, tok)
        if saved > 0:
            options.append(Remedy(label=label, changes=changes, saves_bytes=int(saved)))

    t, d = cfg.train, cfg.data
    if t.batch_size > 1:
        half = t.batch_size // 2
        consider(f"batch {t.batch_size} → {half} with gradient accumulation {t.grad_accum} → {t.grad_accum * 2} "
                 "(same effective batch)", {"train": {"batch_size": half, "grad_accum": t.grad_accum * 2}})
    if d.seq_len > 64:
        consider(f"sequences {d.seq_len} → {d.seq_len // 2} tokens", {"data": {"seq_len": d.seq_len // 2}})
    if not cfg.model.gradient_checkpointing:
        consider("gradient checkpointing (about 30% slower steps)", {"model": {"gradient_checkpointing": True}})
    if cfg.model.quantize == "none":
        consider("load the frozen base in 4-bit (nf4)", {"model": {"quantize": "4bit"}})
    k = resolve_k(cfg.boost.layers, cfg.boost.layers_per_round, shape.n_layers)
    if k > 1:
        consider(f"layers per round {k} → {max(1, k // 2)}", {"boost": {"layers_per_round": max(1, k // 2)}})
    return sorted(options, key=lambda r: -r.saves_bytes)


