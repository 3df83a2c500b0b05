"""Runs made by the real trainer export too; a run trained on a 4-bit base exports
full-precision weights rebuilt from the original checkpoint, not from the 4-bit copy."""

import json

import pytest
import torch

from tests.engine.export.conftest import QA
from xgblora_engine.boosting.ledger import BoosterLedger
from xgblora_engine.config import RunConfig
from xgblora_engine.export import export_run
from xgblora_engine.session import run_training


def train_tiny(model_dir, tmp_path, quantize):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in QA * 4))
    cfg = RunConfig()
    cfg.model.name, cfg.model.quantize = str(model_dir), quantize
    cfg.data.path, cfg.data.seq_len = str(data), 64
    cfg.boost.merge_every, cfg.boost.layers_per_round, cfg.boost.rank = 2, 1, 1  # small updates: see the nf4 check
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.eval_every, cfg.train.lr = 4, 4, 0, 1e-3
    return run_training(cfg, str(tmp_path / f"run-{quantize}"), lambda event: None).path


@pytest.mark.parametrize("quantize", ["none", "4bit"])
def test_trained_run_exports_full_precision_merged_weights(tiny_chat_dir, tmp_path, quantize):
    from safetensors.torch import load_file

    run = train_tiny(tiny_chat_dir, tmp_path, quantize)
    results = export_run(run, tmp_path / "out", ["hf", "peft"])
    assert all(r.ok for r in results), [r.message for r in results]
    ledger = BoosterLedger.load(run / "ledger.safetensors")
    assert len(ledger.rounds) == 2 and ledger.entries
    original = load_file(str(tiny_chat_dir / "model.safetensors"))
    exported = load_file(str(tmp_path / "out" / "hf" / "model.safetensors"))
    for module in ledger.modules():
        key = module + ".weight"
        assert exported[key].dtype == torch.float32
        assert torch.equal(exported[key], original[key] + ledger.delta(module))  # exact fp32 rebuild
    if quantize == "4bit":  # the equality above could not hold for weights taken from the nf4 copy
        import bitsandbytes.functional as bnbf

        key = ledger.modules()[0] + ".weight"
        packed, state = bnbf.quantize_4bit(original[key], quant_type="nf4")
        nf4_error = (bnbf.dequantize_4bit(packed, state) - original[key]).abs().max()
        assert nf4_error > 20 * ledger.delta(ledger.modules()[0]).abs().max()
