"""Preflight arithmetic for a model on one device and for one sharded over GPUs."""

import pytest

from tests.engine.conftest import llama_device_map, place_with_hooks
from xgblora_engine import memory
from xgblora_engine.config import RunConfig
from xgblora_engine.memory import DeviceShare, Shape
from xgblora_engine.models.shape import shape_of, shares_of

GB = 2**30
# roughly an 8B llama: 32 layers, hidden 4096, intermediate 14336, vocab 128k
LLAMA8B = Shape(n_params=8_030_261_248, n_layers=32, hidden=4096, intermediate=14336, vocab=128_256,
                linear_params_per_layer=218_103_808, linear_dims_per_layer=4096 * 7 * 2 + 14336 * 3 + 1024 * 2)


def run_config(k=10, batch=4, seq=512):
    cfg = RunConfig()
    cfg.boost.layers_per_round, cfg.train.batch_size, cfg.data.seq_len = k, batch, seq
    return cfg


def two_gpu_shares(shape, head_params=525_336_576):
    """Layers 0-15 with the embeddings on cuda:0, layers 16-31, the norm and LM head on cuda:1."""
    layer_params = (shape.n_params - 2 * head_params) // shape.n_layers
    return [DeviceShare("cuda:0", 16, 16 * layer_params + head_params, False),
            DeviceShare("cuda:1", 16, 16 * layer_params + head_params, True)]


def test_one_share_is_the_whole_model(tiny_llama):
    shares = shares_of(tiny_llama)
    assert shares == [DeviceShare("cpu", 4, sum(p.numel() for p in tiny_llama.parameters()), True)]
    shape, cfg = shape_of(tiny_llama), run_config(k=2, batch=2, seq=32)
    whole = memory.estimate(shape, cfg, "cpu", "fp32")
    assert memory.estimate_share(shape, cfg, shares[0], "fp32").parts == whole.parts


def test_shares_are_read_from_where_each_layer_is(tiny_llama):
    model = place_with_hooks(tiny_llama, llama_device_map(tiny_llama, later="meta"))
    near, far = shares_of(model)
    assert (near.device, near.layers, near.lm_head) == ("cpu", 2, False)
    assert (far.device, far.layers, far.lm_head) == ("meta", 2, True)
    assert near.params + far.params == sum(p.numel() for p in model.parameters())
    assert near.params - far.params == 128 * 32 - 32 * 128 - 32  # embeddings vs LM head and final norm


def test_per_device_parts_add_up_to_the_whole_model():
    cfg = run_config()
    whole = memory.estimate(LLAMA8B, cfg, "cuda", "bf16")
    first, second = (memory.estimate_share(LLAMA8B, cfg, s, "bf16") for s in two_gpu_shares(LLAMA8B))
    for part in ("weights", "logits"):
        assert first.parts[part] + second.parts[part] == pytest.approx(whole.parts[part], rel=1e-6)
    # every frozen layer's activations once; the boosted layers' extra twice, since all
    # k = 10 drawn layers may sit on either GPU
    boosted = memory.estimate(LLAMA8B, run_config(k=11), "cuda", "bf16").parts["activations"] \
        - whole.parts["activations"]
    assert first.parts["activations"] + second.parts["activations"] == whole.parts["activations"] + 10 * boosted
    assert first.parts["logits"] == 0 and second.parts["logits"] == whole.parts["logits"]
    # every GPU has its own CUDA context
    assert first.parts["runtime"] == memory.CUDA_RUNTIME + int(0.1 * first.parts["activations"])


def test_activations_grow_with_the_layers_boosted_a_round():
    """A boosted layer keeps its booster paths' inputs and adds input gradients in
    backward: the process peaked 336 MB higher at k = 30 than at k = 10 (SmolLM2, 480
    tokens; benchmarks/preflight_accuracy.py), and the estimate follows."""
    smollm = Shape(n_params=134_515_008, n_layers=30, hidden=576, intermediate=1536, vocab=49_152,
                   linear_params_per_layer=3_538_944, linear_dims_per_layer=576 * 7 * 2 + 1536 * 3 + 192 * 2)
    def act(k):
        return memory.estimate(smollm, run_config(k=k, batch=4, seq=120), "cpu", "fp32").parts["activations"]
    assert act(30) - act(10) == pytest.approx(336 * 2**20, rel=0.1)
    assert act(20) - act(10) == act(30) - act(20)


def test_each_gpu_holds_the_boosters_of_the_worst_draw():
    """All k sampled layers may come from one GPU: each budgets min(k, its layers)."""
    cfg = run_config(k=10)
    whole = memory.estimate(LLAMA8B, cfg, "cuda", "bf16").parts["boosters + optimizer"]
    for share in two_gpu_shares(LLAMA8B):
        assert memory.estimate_share(LLAMA8B, cfg, share, "bf16").parts["boosters + optimizer"] == whole
    few = DeviceShare("cuda:2", 4, 0, False)
    per_layer = whole // 10
    assert memory.estimate_share(LLAMA8B, cfg, few, "bf16").parts["boosters + optimizer"] == 4 * per_layer
    empty = DeviceShare("cuda:3", 0, 1000, True)  # a GPU holding the LM head alone
    assert memory.estimate_share(LLAMA8B, cfg, empty, "bf16").parts["boosters + optimizer"] == 0


def test_a_4bit_base_shrinks_the_weights_of_every_gpu():
    cfg = run_config()
    cfg.model.quantize = "4bit"
    full = run_config()
    for share in two_gpu_shares(LLAMA8B):
        packed = memory.estimate_share(LLAMA8B, cfg, share, "bf16").parts["weights"]
        assert packed < 0.4 * memory.estimate_share(LLAMA8B, full, share, "bf16").parts["weights"]


def test_every_device_is_checked_against_its_own_free_memory():
    cfg, shares = run_config(), two_gpu_shares(LLAMA8B)
    free = {"cuda:0": 24 * GB, "cuda:1": 12 * GB}
    checks = memory.device_checks(LLAMA8B, cfg, shares, "bf16", free.__getitem__)
    assert [c.device for c in checks] == ["cuda:0", "cuda:1"]
    assert [c.available for c in checks] == [24 * GB, 12 * GB]
    assert checks[0].verdict == "fits" and checks[1].verdict == "wont_fit"
    assert memory.tightest(checks).device == "cuda:1"
    for check, share in zip(checks, shares):
        assert check.predicted_peak == memory.estimate_share(LLAMA8B, cfg, share, "bf16").total
        assert check.measured_peak is None


def test_a_measured_peak_replaces_the_estimate_of_its_device_only():
    cfg, shares = run_config(), two_gpu_shares(LLAMA8B)
    checks = memory.device_checks(LLAMA8B, cfg, shares, "bf16", lambda d: 80 * GB, measured={"cuda:1": 30 * GB})
    # plus what a trial's steps do not hold yet: every drawn layer's carried booster
    carried = memory.estimate_share(LLAMA8B, cfg, shares[1], "bf16").parts["carried boosters"]
    assert checks[1].measured_peak == 30 * GB and checks[1].predicted_peak == 30 * GB + carried > 30 * GB
    assert checks[0].predicted_peak == memory.estimate_share(LLAMA8B, cfg, shares[0], "bf16").total
    cfg.boost.carry = False
    assert memory.device_checks(LLAMA8B, cfg, shares, "bf16", lambda d: 80 * GB,
                                measured={"cuda:1": 30 * GB})[1].predicted_peak == 30 * GB


def test_remedies_of_a_shard_are_priced_on_its_tightest_gpu():
    cfg, shares = run_config(), two_gpu_shares(LLAMA8B)
    on_gpu = memory.remedies(LLAMA8B, cfg, "cuda", "bf16", None, shares[1])
    whole = memory.remedies(LLAMA8B, cfg, "cuda", "bf16", None)
    quant = {r.label: r.saves_bytes for r in on_gpu}["load the frozen base in 4-bit (nf4)"]
    assert quant < {r.label: r.saves_bytes for r in whole}["load the frozen base in 4-bit (nf4)"]
    assert "layers per round 10 → 5" in {r.label for r in on_gpu}  # the run's k, not the GPU's share


def test_the_estimate_counts_boosters_with_the_run_s_own_k_rule():
    def boosters(layers=None, k=None):
        cfg = run_config(k=k)
        cfg.boost.layers = layers
        return memory.estimate(LLAMA8B, cfg, "cuda", "bf16").parts["boosters + optimizer"]

    assert boosters(layers=[0, 5, 31]) == boosters(k=3)  # an explicit list trains its own length
    assert boosters() == boosters(k=16)  # unset: half of 32 layers
    first = two_gpu_shares(LLAMA8B)[0]
    cfg = run_config(k=None)
    cfg.boost.layers = list(range(20))  # 20 layers, at most 16 of them on one GPU
    assert memory.estimate_share(LLAMA8B, cfg, first, "bf16").parts["boosters + optimizer"] == boosters(k=16)


def test_remedies_save_from_the_peak_the_user_is_shown_when_the_data_is_shorter_than_the_limit():
    from xgblora_engine.preflight import preflight_result

    cfg = run_config(batch=8, seq=4096)  # the limit; the longest batch is 8 × 300 tokens
    shares = [DeviceShare("cuda:0", LLAMA8B.n_layers, LLAMA8B.n_params, True)]
    result = preflight_result(LLAMA8B, cfg, shares, "bf16", lambda d: 8 * GB, labelled=8 * 100, tokens=8 * 300)
    assert result.verdict == "wont_fit" and result.remedies
    shown = result.parts
    for remedy in result.remedies:
        assert remedy.saves_bytes < result.predicted_peak
        if "checkpointing" in remedy.label:  # the activations counted, and the allocator's 10 % of them
            assert remedy.saves_bytes <= 1.1 * shown["activations"]
    assert not any(r.label.startswith("sequences") for r in result.remedies)  # 300 tokens fit in 2048 already
