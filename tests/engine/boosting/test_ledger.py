import pytest
import torch
from torch import nn

from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord
from xgblora_engine.boosting.merge import Merger
from xgblora_engine.errors import UserError


class OneLinear(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(weight)


def tiny_updates(n_rounds, out=64, inp=64, scale=1e-4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, inp, generator=g), torch.randn(out, 1, generator=g) * scale) for _ in range(n_rounds)]


def test_ledger_rebuild_is_exact_where_chained_bf16_adds_drift():
    torch.manual_seed(0)
    w0 = torch.randn(64, 64).to(torch.bfloat16).float()  # a bf16 checkpoint's weight
    # Steady small updates (as training makes): each one is below half a bf16 ulp of W.
    g = torch.Generator().manual_seed(1)
    updates = [(torch.ones(1, 64), torch.rand(64, 1, generator=g) * 1e-3) for _ in range(200)]
    exact = w0.clone()
    for a, b in updates:
        exact += b @ a

    model = OneLinear(w0).to(torch.bfloat16)
    ledger, merger = BoosterLedger(), Merger(model)
    chained = w0.to(torch.bfloat16)
    for r, (a, b) in enumerate(updates, start=1):
        ledger.record_round(RoundRecord(r, r, [0]), {"lin": (a, b, 1.0)})
        merger.merge_modules(ledger, ["lin"])
        chained = chained + (b @ a).to(torch.bfloat16)

    target = exact.to(torch.bfloat16).float()
    rebuilt_err = (model.lin.weight.float() - target).abs().max().item()
    chained_err = (chained.float() - exact).abs().max().item()
    assert rebuilt_err == 0.0  # cast(W0 + Σ) computed in fp32: exactly the rounded truth
    drift = (exact - w0).abs().max().item()
    assert chained_err > 0.5 * drift  # chained bf16 adds lose most of the update


def test_ledger_delta_sums_scaled_products():
    ledger = BoosterLedger()
    (a1, b1), (a2, b2) = tiny_updates(2, scale=1.0)
    ledger.record_round(RoundRecord(1, 5, [0]), {"m": (a1, b1, 2.0)})
    ledger.record_round(RoundRecord(2, 10, [0]), {"m": (a2, b2, 0.5)})
    assert torch.allclose(ledger.delta("m"), 2.0 * b1 @ a1 + 0.5 * b2 @ a2)
    assert ledger.rank_of("m") == 2
    assert ledger.layer_history() == [[0], [0]]


def test_ledger_save_load_round_trip(tmp_path):
    ledger = BoosterLedger()
    for r, (a, b) in enumerate(tiny_updates(3, scale=1.0), start=1):
        ledger.record_round(RoundRecord(r, r * 10, [r], 1.0, 0.5), {f"layers.{r}.q": (a, b, 2.0)})
    ledger.save(tmp_path / "ledger.safetensors")
    loaded = BoosterLedger.load(tmp_path / "ledger.safetensors")
    assert loaded.rounds == ledger.rounds
    assert loaded.modules() == ledger.modules()
    for m in ledger.modules():
        assert torch.equal(loaded.delta(m), ledger.delta(m))


def test_empty_ledger_round_trip(tmp_path):
    BoosterLedger().save(tmp_path / "l.safetensors")
    assert BoosterLedger.load(tmp_path / "l.safetensors").entries == []


def test_corrupt_ledger_is_reported(tmp_path):
    path = tmp_path / "ledger.safetensors"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="corrupt"):
        BoosterLedger.load(path)
    with pytest.raises(UserError, match="not found"):
        BoosterLedger.load(tmp_path / "missing.safetensors")
