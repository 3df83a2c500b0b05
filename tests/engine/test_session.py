"""Runs in-process: checkpoints, exact resume, corrupt checkpoints, preflight refusal."""

import copy
import json

import pytest
import torch

from xgblora_engine import protocol as P
from xgblora_engine.boosting.ledger import BoosterLedger
from xgblora_engine.errors import UserError
from xgblora_engine.session import Options, resume_training, run_training


def losses(run_dir):
    return {m["step"]: m["loss"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in m}


def assert_same_ledger(a, b):
    la, lb = BoosterLedger.load(a / "ledger.safetensors"), BoosterLedger.load(b / "ledger.safetensors")
    assert la.rounds == lb.rounds and len(la.entries) == len(lb.entries)
    for x, y in zip(la.entries, lb.entries):
        assert (x.round, x.module) == (y.round, y.module)
        assert torch.equal(x.A, y.A) and torch.equal(x.B, y.B)


@pytest.mark.parametrize("stop_after,init,carry,sampling", [
    (3, "kaiming", False, "uniform"), (4, "kaiming", False, "uniform"),  # mid-round, boundary
    (3, "gradient", False, "uniform"), (5, "kaiming", True, "uniform"), (3, "kaiming", True, "gradient"),
    (5, "kaiming", "with B", "uniform"), (5, "gradient-first", "with B", "uniform")])
def test_stopped_and_resumed_run_is_bit_identical(tmp_path, tiny_config, stop_after, init, carry, sampling):
    cfg = copy.deepcopy(tiny_config)
    cfg.train.max_steps, cfg.boost.init, cfg.boost.carry, cfg.boost.sampling = 8, init, bool(carry), sampling
    cfg.boost.carry_b = carry == "with B"
    straight = run_training(copy.deepcopy(cfg), str(tmp_path / "straight"), lambda e: None).path
    events = []
    split = run_training(copy.deepcopy(cfg), str(tmp_path / "split"), events.append,
                         options=Options(stop_after=stop_after)).path
    assert events[-1].status == "stopped" and events[-1].steps == stop_after  # nothing dropped
    newest = sorted((split / "checkpoints").iterdir())[-1]
    assert newest.name == f"step-{stop_after:07d}"
    assert (newest / "live.safetensors").is_file() == bool(stop_after % 2)  # the round in progress, if any
    if stop_after % 2:
        assert events[-1].message == (f"Round {stop_after // 2 + 1} was in progress: its boosters and optimizer "
                                      f"state were saved with the checkpoint at step {stop_after}, and a resume "
                                      "continues it from there.")
    else:
        assert events[-1].message == ""
    assert json.loads((split / "run.json").read_text())["status"] == "stopped"
    resumed = []
    resume_training(str(split), resumed.append)
    started = next(e for e in resumed if isinstance(e, P.RunStarted))
    assert started.start_step == stop_after  # mid-round too: nothing is trained twice
    assert resumed[-1].status == "completed" and resumed[-1].steps == 8
    assert losses(split) == losses(straight)  # every step, bit for bit
    assert_same_ledger(split, straight)
    assert all((c / "carried.safetensors").is_file() == bool(carry) for c in (split / "checkpoints").iterdir()
               if c.name != f"step-{stop_after:07d}" or stop_after > 2)


def test_checkpoints_are_complete_and_pruned(tmp_path, tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.train.max_steps = 10
    events = []
    run = run_training(cfg, str(tmp_path / "run"), events.append, options=Options(keep_checkpoints=2)).path
    saved = [e.step for e in events if isinstance(e, P.CheckpointSaved)]
    assert saved == [2, 4, 6, 8, 10]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000008", "step-0000010"]


def test_every_event_reaches_the_event_log_memory_samples_too(tmp_path, tiny_config):
    events = []
    run = run_training(copy.deepcopy(tiny_config), str(tmp_path / "run"), events.append).path
    logged = [P.from_dict(json.loads(line)) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [type(e) for e in logged] == [type(e) for e in events]
    samples = [e for e in logged if isinstance(e, P.MemorySample)]
    steps = [e.step for e in logged if isinstance(e, P.StepMetrics)]
    assert [s.step for s in samples] == steps and all(s.rss > 0 and s.predicted_peak for s in samples)


def test_corrupt_checkpoint_falls_back_to_an_earlier_one(tmp_path, tiny_config):
    run = run_training(copy.deepcopy(tiny_config), str(tmp_path / "run"), lambda e: None,
                       options=Options(stop_after=5)).path
    newest = sorted((run / "checkpoints").iterdir())[-1]  # step 5: the Stop's, inside round 3
    (newest / "ledger.safetensors").write_bytes(b"torn")
    events = []
    resume_training(str(run), events.append)
    warnings = [e for e in events if isinstance(e, P.Warning)]
    assert warnings and "ledger.safetensors is damaged" in warnings[0].message
    assert next(e for e in events if isinstance(e, P.RunStarted)).start_step == 4  # the merge before it
    assert events[-1].status == "completed"


def test_all_checkpoints_corrupt_is_reported(tmp_path, tiny_config):
    run = run_training(copy.deepcopy(tiny_config), str(tmp_path / "run"), lambda e: None,
                       options=Options(stop_after=3)).path
    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / "state.json").unlink()
    with pytest.raises(UserError, match="no intact checkpoint"):
        resume_training(str(run), lambda e: None)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="is not a run folder"):
        resume_training(str(tmp_path), lambda e: None)


def test_preflight_refuses_a_run_that_will_not_fit_unless_forced(tmp_path, tiny_config):
    events = []
    with pytest.raises(UserError, match="will not fit; training was not started") as info:
        run_training(copy.deepcopy(tiny_config), str(tmp_path / "a"), events.append,
                     options=Options(memory_limit=50 * 2**20))
    verdict = next(e for e in events if isinstance(e, P.PreflightResult))
    assert verdict.verdict == "wont_fit" and verdict.remedies and "--force" in info.value.hint
    [cpu] = verdict.devices  # one device: its entry repeats the headline figures
    assert (cpu.device, cpu.predicted_peak, cpu.available) == ("cpu", verdict.predicted_peak, 50 * 2**20)
    assert cpu.parts == verdict.parts and verdict.message.startswith("predicted peak ")
    assert not any(isinstance(e, P.StepMetrics) for e in events)
    forced = []
    run_training(copy.deepcopy(tiny_config), str(tmp_path / "b"), forced.append,
                 options=Options(memory_limit=50 * 2**20, force=True))
    assert forced[-1].status == "completed"


def test_estimate_parts_are_positive_for_a_quantized_base(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.engine.conftest import save_tiny_model
    from xgblora_engine import memory
    from xgblora_engine.config import RunConfig
    from xgblora_engine.models.loading import load_model
    from xgblora_engine.models.shape import shape_of

    torch.manual_seed(0)  # bitsandbytes' CPU 4-bit kernels want rows of at least 64
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4))
    path = save_tiny_model(tmp_path / "m", model)
    cfg = RunConfig()
    cfg.model.name = str(path)
    full = shape_of(load_model(cfg.model).model)
    cfg.model.quantize = "4bit"
    quant = shape_of(load_model(cfg.model).model)
    assert quant.n_params == full.n_params
    est_full, est_quant = memory.estimate(full, RunConfig(), "cpu", "fp32"), memory.estimate(quant, cfg, "cpu", "fp32")
    assert 0 < est_quant.parts["weights"] < est_full.parts["weights"]


def test_a_sharded_model_is_refused_in_a_data_parallel_group(tmp_path, tiny_config):
    from xgblora_engine.distributed import SingleProcess

    class TwoRanks(SingleProcess):
        world = 2

    cfg = copy.deepcopy(tiny_config)
    cfg.model.shard_gpus = 2
    with pytest.raises(UserError, match="data-parallel processes \\(2\\) and a model sharded over 2 GPUs do not mix"):
        run_training(cfg, str(tmp_path / "r"), lambda e: None, options=Options(dist=TwoRanks()))
    assert not (tmp_path / "r").exists()
