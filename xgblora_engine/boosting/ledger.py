"""The booster ledger: an fp32 record of every merged booster.

The merged weight of a module is always ``W0 + Σ scaling·B·A`` over its ledger entries,
computed in fp32. The ledger is small (rank r per module per round), gives exact resume
and export, and is the history of which layers trained in which round.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from xgblora_engine.errors import UserError
from xgblora_engine.fileio import atomic_write

LEDGER_FORMAT = "xgblora-ledger/1"


@dataclass
class RoundRecord:
    round: int
    step: int  # optimizer steps completed when this round merged
    layers: list[int]
    lr_factor: float = 1.0  # < 1 when the round was retried after a NaN/inf rollback
    booster_norm: float = 0.0  # Frobenius norm of the round's whole update


@dataclass
class LedgerEntry:
    round: int
    module: str
    scaling: float
    A: torch.Tensor = field(repr=False)  # r×in, fp32, CPU
    B: torch.Tensor = field(repr=False)  # out×r, fp32, CPU


@dataclass
class BoosterLedger:
    rounds: list[RoundRecord] = field(default_factory=list)
    entries: list[LedgerEntry] = field(default_factory=list)

    def record_round(self, record: RoundRecord,
                     factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> None:
        """Add one merged round: module name -> (A, B, scaling)."""
        self.rounds.append(record)
        for module, (a, b, scaling) in factors.items():
            self.entries.append(LedgerEntry(record.round, module, scaling,
                                            a.detach().float().cpu(), b.detach().float().cpu()))

    def modules(self) -> list[str]:
        return sorted({e.module for e in self.entries})

    def entries_for(self, module: str) -> list[LedgerEntry]:
        return [e for e in self.entries if e.module == module]

    def factors(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B_cat, A_cat) with the scalings folded into B: delta = B_cat @ A_cat, exactly."""
        entries = self.entries_for(module)
        if not entries:
            raise KeyError(module)
        b_cat = torch.cat([e.scaling * e.B for e in entries], dim=1)
        a_cat = torch.cat([e.A for e in entries], dim=0)
        return b_cat, a_cat

    def delta(self, module: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """Σ scaling·B·A for one module, fp32, out×in."""
        b_cat, a_cat = self.factors(module)
        return b_cat.to(device) @ a_cat.to(device)

    def rank_of(self, module: str) -> int:
        return sum(e.A.shape[0] for e in self.entries_for(module))

    def layer_history(self) -> list[list[int]]:
        return [r.layers for r in self.rounds]

    # --- persistence -------------------------------------------------------
    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors, meta = {}, []
        for i, e in enumerate(self.entries):
            tensors[f"{i}.A"] = e.A.contiguous()
            tensors[f"{i}.B"] = e.B.contiguous()
            meta.append({"round": e.round, "module": e.module, "scaling": e.scaling})
        header = {"format": LEDGER_FORMAT, "entries": json.dumps(meta),
                  "rounds": json.dumps([asdict(r) for r in self.rounds])}
        if not tensors:  # safetensors needs at least one tensor to keep the header
            tensors["empty"] = torch.zeros(0)
        atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: Path) -> BoosterLedger:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise UserError(f"booster ledger not found: {path}",
                            "the run has not merged a round yet, or the run folder is incomplete")
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
                if header.get("format") != LEDGER_FORMAT:
                    raise ValueError(f"unknown ledger format {header.get('format')!r}")
                meta = json.loads(header["entries"])
                rounds = [RoundRecord(**r) for r in json.loads(header["rounds"])]
                entries = [LedgerEntry(m["round"], m["module"], float(m["scaling"]),
                                       fh.get_tensor(f"{i}.A"), fh.get_tensor(f"{i}.B"))
                           for i, m in enumerate(meta)]
        except Exception as exc:  # a torn or foreign file: say so, don't trace back
            raise UserError(f"booster ledger {path} is corrupt or unreadable ({exc})",
                            "restore it from the run's last checkpoint folder") from None
        return cls(rounds=rounds, entries=entries)
