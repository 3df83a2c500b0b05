"""hf and peft exports of a tiny chat model round-trip: what was written reloads in plain
transformers / PEFT as the merged model, and the checks say so."""

import json

import pytest
import torch

from tests.engine.export.conftest import merge_in_memory
from xgblora_engine.boosting.ledger import BoosterLedger
from xgblora_engine.export import export_run, load_merged
from xgblora_engine.export.common import chat_ids


def checks_by_name(result):
    return {c.name: c for c in result.checks}


def logits(model, tokenizer, prompt="What is the capital of France?"):
    with torch.no_grad():
        return model(input_ids=torch.tensor([chat_ids(tokenizer, prompt)])).logits[0]


def test_hf_export_is_sharded_carded_and_verified(tiny_run, tiny_chat_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    stages = []
    [result] = export_run(tiny_run, out, ["hf"], shard_size="4MB",
                          progress=lambda f, s, x: stages.append((f, s, x)))
    assert result.ok and result.path == str(out) and result.message.startswith("verified")
    checks = checks_by_name(result)
    assert {"reload with transformers", "weights", "tokenizer and chat template", "generation config",
            "logits", "stops at end of turn"} <= checks.keys()
    assert all(c.ok for c in checks.values())
    # sharded safetensors with an index, tokenizer with the chat template
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>" in tokenizer.chat_template
    # generation config stops at the end-of-turn token
    gen = json.loads((out / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos
    # reload equals the merged model and differs from the base (the ledger did something)
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    merged, _, _ = load_merged(tiny_run)
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_dir).eval()
    assert torch.equal(logits(reloaded, tokenizer), logits(merged.eval(), tokenizer))
    assert (logits(reloaded, tokenizer) - logits(base, tokenizer)).abs().max() > 1e-3
    # progress went through the callback, per format, fractions in [0, 1]
    assert any(f == "hf" and "shards" in s for f, s, _ in stages)
    assert all(0.0 <= x <= 1.0 for _, _, x in stages)


def test_model_card_has_base_data_settings_rounds_losses_and_plot(tiny_run, tmp_path):
    out = tmp_path / "merged"
    [result] = export_run(tiny_run, out, ["hf"])
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    for needed in ("## Base model", "tiny-chat", "## Training data", "`sample`", "## Settings",
                   "| booster rank r | 1 |", "## Boosting rounds", "3 rounds merged",
                   "rounds per layer: 0: 3, 1: 1", "final training loss: 1.5000",
                   "final held-out loss: 1.7000", "![training and held-out loss](loss.png)",
                   "## Verification at export", "**logits** — passed"):
        assert needed in card, needed
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bf16_export_is_bf16_and_within_bf16_tolerance(tiny_run, tmp_path, monkeypatch):
    """In memory, the reload is compared with the merged model cast to bf16 (a streamed export
    is compared with the merged model in the base's dtype: test_streamed.py)."""
    from safetensors import safe_open

    merge_in_memory(monkeypatch)
    out = tmp_path / "bf16"
    [result] = export_run(tiny_run, out, ["hf"], dtype="bf16")
    assert result.ok, result.message
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}
    detail = checks_by_name(result)["logits"].detail
    assert "vs the bf16 merged model" in detail and "from the fp32 merged model" in detail


def test_peft_adapter_is_exact_with_per_module_rank_and_scaling_one(tiny_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "adapter"
    [result] = export_run(tiny_run, out, ["peft"])
    assert result.ok, result.message
    config = json.loads((out / "adapter_config.json").read_text())
    ledger = BoosterLedger.load(tiny_run / "ledger.safetensors")
    assert sorted(config["target_modules"]) == ledger.modules()
    ranks = {m: ledger.rank_of(m) for m in ledger.modules()}
    assert set(ranks.values()) == {1, 3}  # layer 0 boosted in 3 rounds, layer 1 in 1
    for module, rank in ranks.items():
        key = module.replace(".", "\\.")
        assert config["rank_pattern"].get(key, config["r"]) == rank
        assert config["alpha_pattern"].get(key, config["lora_alpha"]) == rank  # scaling 1
    # PEFT on the base gives the merged model; merge_and_unload gives its weights
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"]).eval()
    model = PeftModel.from_pretrained(base, out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    merged, _, _ = load_merged(tiny_run)
    assert (logits(model, tokenizer) - logits(merged.eval(), tokenizer)).abs().max() < 1e-4
    unloaded = model.merge_and_unload()
    name = ledger.modules()[0]
    assert torch.allclose(unloaded.get_submodule(name).weight, merged.get_submodule(name).weight, atol=1e-6)
    assert {"load with PEFT", "logits", "stops at end of turn"} <= checks_by_name(result).keys()


def test_peft_svd_compression_reports_its_error_and_is_verified_against_itself(tiny_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "adapter-r1"
    [result] = export_run(tiny_run, out, ["peft"], peft_rank=1)
    assert result.ok, result.message
    checks = checks_by_name(result)
    compression = checks["SVD compression"].detail
    assert "rank ≤ 1" in compression and "relative error" in compression
    error = float(compression.split("relative error ")[1].split()[0])
    assert 0.0 < error < 1.0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 1 and not config["rank_pattern"]
    # the reference it passed against is the compressed model, not the exact one
    assert "compressed updates" in checks["logits"].detail
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"]).eval()
    model = PeftModel.from_pretrained(base, out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    merged, _, _ = load_merged(tiny_run)
    assert (logits(model, tokenizer) - logits(merged.eval(), tokenizer)).abs().max() > 1e-3


def test_several_formats_go_to_sub_folders(tiny_run, tmp_path):
    out = tmp_path / "all"
    results = export_run(tiny_run, out, "hf,peft")
    assert [r.format for r in results] == ["hf", "peft"] and all(r.ok for r in results)
    assert (out / "hf" / "config.json").is_file() and (out / "peft" / "adapter_config.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["hf", "peft"]


def test_no_verify_writes_without_checks(tiny_run, tmp_path):
    [result] = export_run(tiny_run, tmp_path / "fast", ["hf"], verify=False)
    assert result.ok and result.checks == [] and "not verified" in result.message
    assert (tmp_path / "fast" / "config.json").is_file()


@pytest.mark.parametrize("kwargs, message", [
    ({"formats": ["safetensors"]}, "unknown export format 'safetensors'"),
    ({"dtype": "fp8"}, "invalid dtype 'fp8'"),
    ({"quant": "q4_k_m"}, "invalid GGUF type 'q4_k_m'"),
    ({"peft_rank": 0}, "invalid adapter rank 0"),
])
def test_bad_options_fail_before_anything_is_written(tiny_run, tmp_path, kwargs, message):
    from xgblora_engine.errors import UserError

    with pytest.raises(UserError, match=message):
        export_run(tiny_run, tmp_path / "x", **kwargs)
    assert not any(tmp_path.glob("*x*"))


def test_a_run_without_merged_rounds_has_nothing_to_export(tiny_chat_dir, tmp_path):
    from tests.engine.export.conftest import make_run
    from xgblora_engine.errors import UserError

    run = make_run(tiny_chat_dir, tmp_path / "run", rounds=())
    with pytest.raises(UserError, match="no merged round"):
        export_run(run, tmp_path / "x", ["hf"])


def test_a_base_model_without_chat_template_is_not_asked_to_end_turns(tiny_chat_dir, tmp_path):
    import shutil

    from tests.engine.export.conftest import make_run

    plain = tmp_path / "plain-model"
    shutil.copytree(tiny_chat_dir, plain)
    (plain / "chat_template.jinja").unlink()
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    run = make_run(plain, tmp_path / "run")
    [result] = export_run(run, tmp_path / "out", ["hf"])
    assert result.ok, result.message
    stops = checks_by_name(result)["stops at end of turn"]
    assert stops.skipped and "no chat template" in stops.detail


def test_the_card_says_a_gguf_base_s_weights_are_the_file_s_not_the_hub_checkpoint_s():
    from xgblora_engine.config import RunConfig
    from xgblora_engine.export.card import base_lines
    from xgblora_engine.models.source import ModelSource

    source = ModelSource("default", "/pkg", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct (embedded)")
    lines = base_lines(RunConfig(), source, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert lines[0] == ("* `default` (SmolLM2-135M-Instruct (embedded)), from the Hub model "
                        "`HuggingFaceTB/SmolLM2-135M-Instruct`")
    assert "`SmolLM2-135M-Instruct.Q4_1.gguf`, dequantized to fp32" in lines[1]
    assert not any("full-precision" in line for line in lines)
