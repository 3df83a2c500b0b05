"""--report-to tensorboard: event files in the run folder, or a clear message without the package."""

import builtins
import copy

import pytest

from xgblora_engine.errors import UserError
from xgblora_engine.session import run_training


def test_a_run_reported_to_tensorboard_writes_readable_event_files(tmp_path, tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = copy.deepcopy(tiny_config)
    cfg.train.report_to, cfg.train.eval_every, cfg.train.samples = "tensorboard", 3, 2
    run = run_training(cfg, str(tmp_path / "run"), lambda e: None)
    events = EventAccumulator(str(run.path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "eval/loss", "samples/token_f1", "memory/bytes", "rounds/booster_norm"} <= set(scalars)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("eval/loss")] == [0, 3, 6]
    assert [e.step for e in events.Scalars("rounds/booster_norm")] == [2, 4, 6]


def test_without_the_package_the_run_is_refused_before_the_model_loads(tmp_path, tiny_config, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    cfg = copy.deepcopy(tiny_config)
    cfg.train.report_to = "tensorboard"
    with pytest.raises(UserError, match="needs the tensorboard package, which is not installed") as exc:
        run_training(cfg, str(tmp_path / "run"), lambda e: None)
    assert "pip install tensorboard" in exc.value.hint
    assert not (tmp_path / "run").exists()  # nothing made before the refusal


def test_an_unknown_report_target_is_named():
    from xgblora_engine.config import RunConfig

    cfg = RunConfig()
    cfg.train.report_to = "wandb"
    with pytest.raises(UserError, match="invalid report_to 'wandb'"):
        cfg.validate()
