"""Merging: how a round's boosters become part of the frozen model.

Two policies, chosen per module by what its weight is:

* **add** (fp32 weights): ``W += scaling·B·A`` for the round's boosters, in place. fp32
  rounds each merge at ~1e-7 of the weight, far below any booster update
  (benchmarks/merge_precision.py), and needs no copy of W0. Replaying a ledger round by
  round (resume) repeats the same additions in the same order: bit-identical weights.
* **rebuild** (bf16, fp16 weights): ``W = cast(W0 + ledger.delta(module))`` computed
  in fp32 from a CPU copy of the original weight taken at the module's first merge. The
  bf16 rounding of one merge never feeds the next, so small updates are not rounded
  away, and replaying a ledger on a fresh model (resume) gives bit-identical weights.
* **low-rank path** (bitsandbytes 4-bit / 8-bit weights): a quantized weight cannot take
  a small update without losing it, so the merged boosters stay beside it as one frozen
  fp32 low-rank path ``x·A_catᵀ·B_catᵀ``. When its rank passes ``rank_cap`` it is
  recompressed to the cap by an exact-core SVD and the discarded energy is reported.
  The ledger itself stays exact; export rebuilds full-precision weights from it.
"""

from __future__ import annotations

import torch
from torch import nn

from xgblora_engine.boosting.booster import BoosterLinear, linear_shape
from xgblora_engine.boosting.ledger import BoosterLedger

QUANTIZED_CLASSES = ("Linear4bit", "Linear8bitLt", "Params4bit", "Int8Params")


def is_quantized(module: nn.Module) -> bool:
    return type(module).__name__ in QUANTIZED_CLASSES


def is_fan_in_fan_out(module: nn.Module) -> bool:
    """GPT-2's Conv1D stores its weight in×out."""
    return type(module).__name__ == "Conv1D"


class MergedLowRank(nn.Module):
    """A quantized linear plus the frozen sum of its merged boosters."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features, self.out_features = linear_shape(base)
        device = next(base.parameters()).device
        self.register_buffer("merged_A", torch.zeros(0, self.in_features, device=device))
        self.register_buffer("merged_B", torch.zeros(self.out_features, 0, device=device))

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self.base_layer(x, *args, **kwargs)
        if self.merged_A.shape[0] == 0:
            return y
        return y + (x.to(torch.float32) @ self.merged_A.t() @ self.merged_B.t()).to(y.dtype)

    def set_factors(self, b_cat: torch.Tensor, a_cat: torch.Tensor) -> None:
        self.merged_B = b_cat.to(self.merged_B.device, torch.float32)
        self.merged_A = a_cat.to(self.merged_A.device, torch.float32)


def compress(b_cat: torch.Tensor, a_cat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factors of B·A via QR of each factor and an SVD of the small core.

    Returns (B', A', relative Frobenius error). Exact (error 0) when rank ≥ rank(B·A).
    """
    qb, rb = torch.linalg.qr(b_cat.double())
    qa, ra = torch.linalg.qr(a_cat.t().double())
    u, s, vh = torch.linalg.svd(rb @ ra.t())
    keep = min(rank, s.numel())
    err = float(s[keep:].square().sum().sqrt() / s.square().sum().sqrt().clamp_min(1e-30))
    b_new = (qb @ u[:, :keep]) * s[:keep]
    a_new = vh[:keep] @ qa.t()
    return b_new.float(), a_new.float(), err


class Merger:
    """Folds merged rounds into the live model, one module at a time."""

    def __init__(self, model: nn.Module, rank_cap: int = 64) -> None:
        self.model = model
        self.rank_cap = rank_cap
        self.originals: dict[str, torch.Tensor] = {}  # CPU copies of W0 (rebuild policy)
        self.compression_error: dict[str, float] = {}

    def merge_modules(self, ledger: BoosterLedger, modules: list[str]) -> None:
        """Make each module's live weight equal W0 + its ledger sum, after the ledger's
        newest round was recorded."""
        newest = ledger.rounds[-1].round if ledger.rounds else None
        for name in modules:
            module = self._frozen_module(name)
            if isinstance(module, MergedLowRank) or is_quantized(module):
                self._merge_low_rank(name, module, ledger)
            elif module.weight.dtype == torch.float32:
                self._add(module, [e for e in ledger.entries_for(name) if e.round == newest])
            else:
                self._rebuild(name, module, ledger)

    def apply_ledger(self, ledger: BoosterLedger) -> None:
        """Replay a whole ledger onto a freshly loaded model (resume): fp32 weights take
        the rounds one by one, exactly as training added them."""
        modules = ledger.modules()
        replayed = {n for n in modules if self._frozen_module(n).weight.dtype == torch.float32
                    and not is_quantized(self._frozen_module(n))}
        for entry in ledger.entries:
            if entry.module in replayed:
                self._add(self._frozen_module(entry.module), [entry])
        self.merge_modules(ledger, [n for n in modules if n not in replayed])

    @torch.no_grad()
    def _add(self, module: nn.Module, entries: list) -> None:
        weight = module.weight
        for e in entries:
            delta = (e.scaling * e.B).to(weight.device) @ e.A.to(weight.device)
            weight.add_(delta.t() if is_fan_in_fan_out(module) else delta)

    def _frozen_module(self, name: str) -> nn.Module:
        module = self.model.get_submodule(name)
        if isinstance(module, BoosterLinear):
            raise RuntimeError(f"detach the booster on {name} before merging")
        return module

    @torch.no_grad()
    def _rebuild(self, name: str, module: nn.Module, ledger: BoosterLedger) -> None:
        weight = module.weight
        if name not in self.originals:
            self.originals[name] = weight.detach().to("cpu", copy=True)
        w0 = self.originals[name].to(weight.device, torch.float32)
        delta = ledger.delta(name, weight.device)
        if is_fan_in_fan_out(module):
            delta = delta.t()
        weight.copy_((w0 + delta).to(weight.dtype))

    def _merge_low_rank(self, name: str, module: nn.Module, ledger: BoosterLedger) -> None:
        if not isinstance(module, MergedLowRank):
            module = MergedLowRank(module)
            parent_name, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent_name) if parent_name else self.model, child, module)
        b_cat, a_cat = ledger.factors(name)
        if b_cat.shape[1] > self.rank_cap:
            b_cat, a_cat, err = compress(b_cat, a_cat, self.rank_cap)
            self.compression_error[name] = err
        module.set_factors(b_cat, a_cat)
