"""Aiming a fresh booster at the loss gradient (``boost.init: gradient``).

Gradient boosting fits each weak learner to the negative gradient at the current model.
For a booster ``(α/r)·B·A`` with B = 0 the gradient of B is ``(α/r)·G·Aᵀ``, where
``G = Σ δ·xᵀ`` is the weight gradient of the boosted linear: a random A sees G through
a random projection, and the booster spends its first steps turning A towards G's
dominant input directions. Starting A at G's top right singular vectors (LoRA-GA,
LoRA-One) removes that search; B stays 0, so attaching still changes nothing and the
ledger records the same kind of factors.

G is never materialised. At the round's first optimizer step every booster sketches it
from the ``x`` and ``δ`` the step computes anyway (Tropp et al. 2017, single-pass):

    Y = Gᵀ·Ω        in × m      (range of Gᵀ: the input directions)
    W = Ψ·Gᵀ        l × out     (co-range, to recover the small core)

Both are sums over tokens, so micro-batches and data-parallel ranks just add them up
(one all-reduce), and memory is (in + out) × m per booster. Ω and Ψ are drawn from
(seed, round, module), so every process and every resume computes the same A.

Because B = 0, the step's loss and δ do not depend on A: the first step's gradient of
B for the new A is read off the same sketch (``G·Aᵀ``) and the step is not repeated.
"""

from __future__ import annotations

import torch
from torch import nn

from xgblora_engine.boosting.booster import KAIMING_ROW_NORM, BoosterLinear

OVERSAMPLE = 16  # extra sketch columns beyond the directions kept: 88-99 % of the top-r gradient energy on SmolLM2


class GradientSketch:
    """Sketches of one booster's weight gradient, filled by hooks during backward."""

    def __init__(self, booster: BoosterLinear, generator: torch.Generator, width: int) -> None:
        in_features, out_features = booster.A.shape[1], booster.B.shape[0]
        m = min(width + OVERSAMPLE, in_features, out_features)
        l_rows = min(2 * m + 1, in_features)
        device = booster.A.device
        self.omega = torch.randn(out_features, m, generator=generator).to(device)
        self.psi = torch.randn(l_rows, in_features, generator=generator).to(device)
        self.Y = torch.zeros(in_features, m, device=device)
        self.W = torch.zeros(l_rows, out_features, device=device)
        self.handle = booster.register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if not (torch.is_grad_enabled() and output.requires_grad):
            return
        x = args[0].detach()  # already kept by autograd for A's gradient: no copy

        def on_grad(delta: torch.Tensor) -> None:
            xs = x.reshape(-1, x.shape[-1]).float()
            ds = delta.reshape(-1, delta.shape[-1]).float()
            self.Y += xs.t() @ (ds @ self.omega)
            self.W += (self.psi @ xs.t()) @ ds

        # A recomputed forward (gradient checkpointing) registers a hook on a tensor that
        # backward never reaches: only the original output's hook fires.
        output.register_hook(on_grad)

    def tensors(self) -> list[torch.Tensor]:
        return [self.Y, self.W]

    def close(self) -> None:
        self.handle.remove()

    def top_directions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(V: in×m right singular vectors, S: m singular values, U: out×m left ones) of G.

        Only QR, a triangular solve and a symmetric eigensolver: LAPACK's least squares
        and SVD give results that vary in the last bits with where their work buffers
        land, and resume must reproduce the same A bit for bit.
        """
        q, _ = torch.linalg.qr(self.Y)
        q_psi, r_psi = torch.linalg.qr(self.psi @ q)
        core = torch.linalg.solve_triangular(r_psi, q_psi.t() @ self.W, upper=True).double()  # Gᵀ ≈ q·core
        eigenvalues, vectors = torch.linalg.eigh(core @ core.t())
        eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)  # largest first
        s = eigenvalues.clamp_min(0).sqrt()
        u = (core.t() @ vectors) / s.clamp_min(torch.finfo(torch.float64).tiny)
        return q @ vectors.to(q.dtype), s.to(q.dtype), u.to(q.dtype)


class GradientAim:
    """Hooks every booster of a round for one step, then re-aims each A at its gradient."""

    def __init__(self, boosters: dict[str, BoosterLinear], seed: int, round_index: int,
                 pool: int = 1) -> None:
        self.boosters = boosters
        self.pool = pool  # draw the r directions from the top pool·r of G
        self.sketches = {}
        for i, (name, booster) in enumerate(boosters.items()):
            g = torch.Generator(device="cpu")
            g.manual_seed((seed * 1_000_003 + round_index) * 10_007 + i + 7_777)
            self.sketches[name] = (GradientSketch(booster, g, pool * booster.rank), g)

    def apply(self, reduce) -> None:
        """After the step's backward (and ``reduce``, the data-parallel sum of the
        sketches): set each A and the matching gradient of B, then unhook."""
        flat = [t for sketch, _ in self.sketches.values() for t in sketch.tensors()]
        reduce(flat)
        for name, (sketch, generator) in self.sketches.items():
            sketch.close()
            aim_booster(self.boosters[name], *sketch.top_directions(), self.pool, generator)

    def close(self) -> None:
        for sketch, _ in self.sketches.values():
            sketch.close()


@torch.no_grad()
def aim_booster(booster: BoosterLinear, v: torch.Tensor, s: torch.Tensor, u: torch.Tensor,
                pool: int, generator: torch.Generator) -> None:
    """A ← the top-r input directions of G (or r random mixtures of the top pool·r), rows at
    the kaiming row norm; B's gradient ← (α/r)·G·Aᵀ computed from the same factors."""
    r = booster.rank
    width = min(pool * r, v.shape[1])
    mix = torch.eye(width)[:r] if pool == 1 else _orthonormal_rows(r, width, generator)
    mix = mix.to(v.device)
    directions = mix @ v[:, :width].t()  # r × in, orthonormal rows
    row_norm = KAIMING_ROW_NORM
    booster.A.copy_(row_norm * directions)
    g_at = (u[:, :width] * s[:width]) @ mix.t() * row_norm  # G·Aᵀ ≈ U·S·Vᵀ·V·mixᵀ
    booster.B.grad = (booster.scaling * g_at).to(booster.B.dtype)
    if booster.A.grad is not None:
        booster.A.grad.zero_()  # ∂L/∂A = (α/r)·Bᵀ·G = 0 while B = 0


def _orthonormal_rows(r: int, width: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(width, r, generator=generator))
    return q.t()
