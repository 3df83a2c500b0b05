"""Run folders for the Runs/Export/Try-it tests, written the way the engine writes them."""

from __future__ import annotations

from pathlib import Path

import msgspec

from xgblora_app.demo_engine import SMOLLM2_INFO, DemoEngine
from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig, save_config
from xgblora_engine.rundir import RunDir


def train_run_folder(root: Path, name: str = "run-a", steps: int = 20, kappa: int = 5,
                     killed_after: int | None = None, lr: float | None = None) -> Path:
    """A completed run folder made by the scripted engine; with ``killed_after`` the
    engine dies after that many steps, leaving the folder as a killed worker does."""
    client = DemoEngine(runs_root=root, steps_per_poll=None,
                        die_at_step=None if killed_after is None else killed_after + 1)
    client.start()
    cfg = RunConfig()
    cfg.train.max_steps, cfg.boost.merge_every, cfg.train.eval_every = steps, kappa, 10
    cfg.train.lr = lr or cfg.train.lr
    client.send(P.StartRun(config=cfg, run_dir=str(root / name)))
    while client.poll(100_000):
        pass
    return root / name


def model_info(n_layers: int) -> P.ModelInfo:
    """The embedded model's info with another layer count."""
    return msgspec.structs.replace(SMOLLM2_INFO, n_layers=n_layers)


def handmade_run_folder(root: Path, name: str = "hand-made") -> Path:
    """A run folder written directly with RunDir and protocol dicts: 4 steps, 2 rounds, 6 layers."""
    run = RunDir.create(root / name, "tiny")
    save_config(RunConfig(), run.config_path)
    events = [P.RunStarted(run_dir=str(run.path), config=RunConfig(), model_info=model_info(6), data_report="",
                           n_layers=6, total_steps=4, total_rounds=2)]
    for step in range(1, 5):
        events.append(P.StepMetrics(step=step, round=(step + 1) // 2, loss=3.0 - 0.25 * step, lr=1e-3,
                                    grad_norm=1.0, layers=[1, 4], seconds=0.1, tokens=64, tokens_per_s=640.0))
        events.append(P.MemorySample(step=step, device="cpu", allocated=None, reserved=None, peak=None,
                                     rss=(500 + step) * 2**20, predicted_peak=600 * 2**20))
        if step % 2 == 0:
            events.append(P.RoundMerged(round=step // 2, step=step, layers=[1, 4] if step == 2 else [0, 5],
                                        modules=8, booster_norm=0.1, merge_seconds=0.01, round_seconds=0.2))
    events.append(P.EvalResult(step=4, round=2, eval_loss=2.2, n_tokens=100))
    events.append(P.Finished(status="completed", run_dir=str(run.path), steps=4, final_loss=2.0,
                             final_eval_loss=2.2))
    for e in events:
        run.record_event(P.to_dict(e))
    run.update_status(status="completed", model="tiny", data="sample", step=4, total_steps=4,
                      final_loss=2.0, final_eval_loss=2.2)
    return run.path
