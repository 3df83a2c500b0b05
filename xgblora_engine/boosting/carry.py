"""What a layer's next booster inherits from its last one (``boost.carry``): A and the Adam
moments of both factors. B starts at 0 again, so attaching still changes nothing and the
ledger still records exactly what is merged; the moments keep referring to the same
coordinates because A is the same. Without it every round restarts cold: a random A
and zero moments, the search for a useful input direction paid again each time.

Kept per target module on the booster's device (at most 3·r·(in+out) values a module)
and written with every checkpoint, so a resume continues bit for bit. The same store
holds a round that a Stop cut short, B included, so its resume retrains nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xgblora_engine.boosting.booster import BoosterLinear, weight_device

SEP = "::"  # module name, then what: "model.layers.3.mlp.up_proj::A.exp_avg"


class CarryStore:
    def __init__(self, tensors: dict[str, torch.Tensor] | None = None) -> None:
        # module -> {"A": ..., "A.exp_avg": ..., "B.step": ...}: a round looks up only its own
        self.by_module: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in (tensors or {}).items():
            module, what = key.split(SEP)
            self.by_module.setdefault(module, {})[what] = value

    def __bool__(self) -> bool:
        return bool(self.by_module)

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat, as saved: "module::what" -> tensor."""
        return {f"{m}{SEP}{what}": v for m, kept in self.by_module.items() for what, v in kept.items()}

    def modules(self) -> set[str]:
        return set(self.by_module)

    def restore_factors(self, boosters: dict[str, BoosterLinear]) -> None:
        """A (and B, when kept: a round in progress) from the module's last booster."""
        with torch.no_grad():
            for name, b in boosters.items():
                kept = self.by_module.get(name, {})
                for factor, param in (("A", b.A), ("B", b.B)):
                    if factor in kept:
                        param.copy_(kept[factor])

    def with_b(self, boosters: dict[str, BoosterLinear]) -> list[str]:
        """The boosters whose module's B was kept (boost.carry_b)."""
        return [name for name in boosters if "B" in self.by_module.get(name, {})]

    def restore_moments(self, optimizer: torch.optim.Optimizer, boosters: dict[str, BoosterLinear]) -> None:
        for name, b in boosters.items():
            kept = self.by_module.get(name, {})
            for factor, param in (("A", b.A), ("B", b.B)):
                state = {what[2:]: v.clone() for what, v in kept.items() if what.startswith(f"{factor}.")}
                if state:
                    optimizer.state[param] = state

    def keep(self, boosters: dict[str, BoosterLinear], optimizer: torch.optim.Optimizer,
             with_b: bool = False) -> None:
        """Remember each booster's A (and B: a round stopped half way) and its factors' moments."""
        for name, b in boosters.items():
            kept = self.by_module[name] = {"A": b.A.detach().clone()}
            if with_b:
                kept["B"] = b.B.detach().clone()
            for factor, param in (("A", b.A), ("B", b.B)):
                for key, value in optimizer.state.get(param, {}).items():
                    kept[f"{factor}.{key}"] = value.detach().clone()

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({key: value.contiguous().cpu() for key, value in self.tensors.items()}, str(path))

    @classmethod
    def load(cls, path: Path) -> CarryStore:
        from safetensors.torch import load_file

        return cls(load_file(str(path)))

    def place(self, model: nn.Module) -> None:
        """Each tensor on the device of its module's weights, where its booster will live."""
        for module, kept in self.by_module.items():
            device = weight_device(model.get_submodule(module))
            for what, value in kept.items():
                kept[what] = value.to(device)
