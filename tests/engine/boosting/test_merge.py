import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from xgblora_engine.boosting.booster import attach_boosters, detach_boosters
from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord
from xgblora_engine.boosting.merge import MergedLowRank, Merger, compress


def quantized_linear(weight: torch.Tensor) -> nn.Module:
    out_f, in_f = weight.shape
    q = bnb.nn.Linear4bit(in_f, out_f, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    q.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4")
    return q.to("cpu")


class Net(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.proj = quantized_linear(weight)

    def forward(self, x):
        return self.proj(x)


def boost_and_merge(net, ledger, merger, round_index, scale=0.05):
    boosters = attach_boosters(net, ["proj"], 1, 2.0, 0.0, 0, round_index)
    with torch.no_grad():
        boosters["proj"].B.normal_(0, scale)
    factors = {n: (*b.factors(), b.scaling) for n, b in boosters.items()}
    x = torch.randn(4, 64)
    with torch.no_grad():
        attached = net(x)
    detach_boosters(net, boosters)
    ledger.record_round(RoundRecord(round_index, round_index, [0]), factors)
    merger.merge_modules(ledger, ["proj"])
    with torch.no_grad():
        return attached, net(x)


def test_quantized_base_keeps_merged_boosters_in_a_low_rank_path():
    torch.manual_seed(0)
    net, ledger = Net(torch.randn(32, 64)), BoosterLedger()
    merger = Merger(net)
    for r in range(1, 4):
        attached, merged = boost_and_merge(net, ledger, merger, r)
        assert (attached - merged).abs().max() < 1e-5
    assert isinstance(net.proj, MergedLowRank) and net.proj.merged_A.shape[0] == 3
    assert torch.allclose(net.proj.merged_B @ net.proj.merged_A, ledger.delta("proj"), atol=1e-6)


def test_requantizing_would_lose_small_updates_the_low_rank_path_keeps():
    """Why not dequantize → add → requantize: nf4 steps swallow small updates."""
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    q = quantized_linear(w)
    w_deq = bnb.functional.dequantize_4bit(q.weight.data, q.weight.quant_state)
    delta = torch.randn(32, 1) @ torch.randn(1, 64) * 1e-3
    q2 = quantized_linear(w_deq + delta)
    w_requant = bnb.functional.dequantize_4bit(q2.weight.data, q2.weight.quant_state)
    kept = ((w_requant - w_deq) * delta).sum() / delta.square().sum()
    assert kept < 0.5  # most of the update is rounded away by requantization


def test_compress_is_exact_up_to_the_true_rank_and_reports_the_rest():
    torch.manual_seed(0)
    b, a = torch.randn(40, 6), torch.randn(6, 30)
    b2, a2, err = compress(b, a, 6)
    assert err < 1e-6 and torch.allclose(b2 @ a2, b @ a, atol=1e-4)
    b3, a3, err3 = compress(b, a, 2)
    assert b3.shape == (40, 2) and a3.shape == (2, 30)
    true_err = torch.linalg.norm(b @ a - b3 @ a3) / torch.linalg.norm(b @ a)
    assert err3 == pytest.approx(float(true_err), rel=1e-3)


def test_rank_cap_recompresses_the_path():
    torch.manual_seed(0)
    net, ledger = Net(torch.randn(32, 64)), BoosterLedger()
    merger = Merger(net, rank_cap=2)
    for r in range(1, 5):
        boost_and_merge(net, ledger, merger, r)
    assert net.proj.merged_A.shape[0] == 2
    assert 0 < merger.compression_error["proj"] < 1
    assert ledger.rank_of("proj") == 4  # the ledger itself stays exact


class Dense(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.proj = nn.Linear(64, 32, bias=False).to(dtype)

    def forward(self, x):
        return self.proj(x)


def dense_boost_and_merge(net, ledger, merger, round_index):
    boosters = attach_boosters(net, ["proj"], 1, 2.0, 0.0, 0, round_index)
    with torch.no_grad():
        boosters["proj"].B.normal_(0, 0.05)
    factors = {n: (*b.factors(), b.scaling) for n, b in boosters.items()}
    detach_boosters(net, boosters)
    ledger.record_round(RoundRecord(round_index, round_index, [0]), factors)
    merger.merge_modules(ledger, ["proj"])


def test_fp32_weights_take_merges_in_place_and_a_replay_is_bit_identical():
    torch.manual_seed(0)
    net, ledger = Dense(torch.float32), BoosterLedger()
    w0 = net.proj.weight.detach().clone()
    merger = Merger(net)
    for r in range(1, 6):
        dense_boost_and_merge(net, ledger, merger, r)
    assert merger.originals == {}  # no copy of W0 for fp32
    exact = w0.double() + ledger.delta("proj").double()
    assert torch.allclose(net.proj.weight.double(), exact, atol=1e-6)
    fresh = Dense(torch.float32)
    fresh.proj.weight.data.copy_(w0)
    Merger(fresh).apply_ledger(ledger)
    assert torch.equal(fresh.proj.weight, net.proj.weight)


def test_bf16_weights_are_rebuilt_from_the_original_so_small_updates_survive():
    torch.manual_seed(0)
    net, ledger = Dense(torch.bfloat16), BoosterLedger()
    w0 = net.proj.weight.detach().float().clone()
    merger = Merger(net)
    for r in range(1, 6):
        dense_boost_and_merge(net, ledger, merger, r)
    assert set(merger.originals) == {"proj"}
    expected = (w0 + ledger.delta("proj")).to(torch.bfloat16)
    assert torch.equal(net.proj.weight, expected)


class TwoDevices(nn.Module):
    """One fp32 linear on the CPU, one on the meta device (a stand-in for a second GPU:
    an operation mixing the two fails as cpu/cuda mixing does)."""

    def __init__(self):
        super().__init__()
        self.near = nn.Linear(64, 32, bias=False)
        self.far = nn.Linear(64, 32, bias=False).to("meta")
        self.quantized = MergedLowRank(nn.Linear(64, 32, bias=False).to("meta"))


def test_merges_stay_on_each_module_s_own_device():
    torch.manual_seed(0)
    net, ledger = TwoDevices(), BoosterLedger()
    w0 = net.near.weight.detach().clone()
    factors = {name: (torch.randn(1, 64), 0.05 * torch.randn(32, 1), 2.0) for name in ("near", "far", "quantized")}
    ledger.record_round(RoundRecord(1, 1, [0]), factors)
    Merger(net).merge_modules(ledger, list(factors))
    assert net.far.weight.device.type == "meta" and net.quantized.merged_A.device.type == "meta"
    assert torch.allclose(net.near.weight, w0 + ledger.delta("near"), atol=1e-6)
