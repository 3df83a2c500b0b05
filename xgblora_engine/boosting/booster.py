"""The booster: a fresh rank-r adapter beside a frozen linear, trained for one round.

    y = base(x) + (α/r) · B · A · dropout(x)        A: r×in, B: out×r, both fp32

A starts kaiming-uniform and B at zero, so attaching a booster leaves the model's
output unchanged. ``delta_weight`` is the one place the booster's update is computed;
merging, the ledger and export all go through it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of nn.Linear, bitsandbytes linears and GPT-2's Conv1D."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 layer: weight is in×out
        return int(module.weight.shape[0]), int(module.nf)
    raise TypeError(f"cannot boost a {type(module).__name__}: not a linear layer")


# Expected norm of a row of A under LoRA's kaiming-uniform init (a=√5): each value is
# uniform in ±1/√in, variance 1/(3·in), so a row of ``in`` values has norm √(1/3) whatever in is.
KAIMING_ROW_NORM = math.sqrt(1 / 3)


def weight_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class BoosterLinear(nn.Module):
    """Wraps a frozen linear-like module and adds one trainable rank-r booster."""

    def __init__(self, base: nn.Module, rank: int, scaling: float, dropout: float = 0.0,
                 generator: torch.Generator | None = None, offset: bool = False) -> None:
        super().__init__()
        in_features, out_features = linear_shape(base)
        device = weight_device(base)
        self.base_layer = base
        self.rank = rank
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.A = nn.Parameter(torch.empty(rank, in_features, dtype=torch.float32))
        self.B = nn.Parameter(torch.zeros(out_features, rank, dtype=torch.float32))
        # Same init as LoRA/PEFT (kaiming-uniform with a=√5); drawn on CPU from a seeded
        # generator so the init is identical on every device and process.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)
        # The offset start (boost.init=offset): B starts random too, at A's scale, and the
        # start B0·A0 is subtracted, so the model is still unchanged at attach. Both factors
        # then get gradients from the first step, as a LoRA adapter does after its factors
        # have grown, instead of B climbing out of zero again every round.
        self.register_buffer("A0", torch.zeros(0, in_features), persistent=False)
        self.register_buffer("B0", torch.zeros(out_features, 0), persistent=False)
        if offset:
            with torch.no_grad():
                bound = 1.0 / math.sqrt(in_features)  # A's kaiming bound
                self.B.uniform_(-bound, bound, generator=generator)
            self.start_here()
        self.to(device)

    def start_here(self) -> None:
        """Make the factors' present values the start that is subtracted (A0, B0): the
        booster then changes nothing yet, whatever A and B hold."""
        self.A0, self.B0 = self.A.detach().clone(), self.B.detach().clone()

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self.base_layer(x, *args, **kwargs)
        x = self.dropout(x).to(self.A.dtype)
        h = x @ self.A.t() @ self.B.t()
        if self.A0.shape[0]:  # computed apart, so it cancels the trained path exactly at attach
            h = h - x @ self.A0.t() @ self.B0.t()
        return y + (self.scaling * h).to(y.dtype)

    def _paths(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B), with the offset start's frozen −B0·A0 path appended as extra rank."""
        if self.A0.shape[0] == 0:
            return self.A, self.B
        return torch.cat([self.A, self.A0]), torch.cat([self.B, -self.B0], dim=1)

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """The booster's update in fp32, shaped out×in (the nn.Linear convention)."""
        a, b = self._paths()
        return self.scaling * (b @ a)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) detached on CPU in fp32, for the ledger (rank 2r with an offset start)."""
        a, b = self._paths()
        return a.detach().float().cpu().clone(), b.detach().float().cpu().clone()

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.A).all() and torch.isfinite(self.B).all())


def _parent_and_name(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_name, _, child = dotted.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def booster_generator(seed: int, round_index: int, module_index: int) -> torch.Generator:
    """A generator whose state depends only on (seed, round, module): reproducible inits."""
    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + round_index) * 10_007 + module_index)
    return g


def attach_boosters(model: nn.Module, targets: list[str], rank: int, scaling: float,
                    dropout: float, seed: int, round_index: int, offset: bool = False) -> dict[str, BoosterLinear]:
    """Wrap each named target linear in a fresh booster; returns name -> booster."""
    boosters: dict[str, BoosterLinear] = {}
    for i, name in enumerate(targets):
        parent, child = _parent_and_name(model, name)
        base = getattr(parent, child)
        if isinstance(base, BoosterLinear):
            raise RuntimeError(f"{name} already carries a booster")
        booster = BoosterLinear(base, rank, scaling, dropout, booster_generator(seed, round_index, i), offset)
        setattr(parent, child, booster)
        boosters[name] = booster
    return boosters


def detach_boosters(model: nn.Module, boosters: dict[str, BoosterLinear]) -> None:
    """Put the frozen base modules back in place; the boosters are dropped."""
    for name, booster in boosters.items():
        parent, child = _parent_and_name(model, name)
        setattr(parent, child, booster.base_layer)


def booster_parameters(boosters: dict[str, BoosterLinear]) -> list[nn.Parameter]:
    return [p for b in boosters.values() for p in (b.A, b.B)]
