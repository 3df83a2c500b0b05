"""The plain-Python state behind the panels: settings, live series, run history."""

import math

import numpy as np
import pytest

from tests.app.helpers import handmade_run_folder, model_info, train_run_folder
from xgblora_app.state.hf_cache import cached_models
from xgblora_app.state.presets import preset_changes
from xgblora_app.state.run_settings import RunSettings, default_value, help_text
from xgblora_app.state.runs import load_events
from xgblora_app.state.series import TrainingSeries
from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig
from xgblora_engine.errors import UserError
from xgblora_engine.runs import list_runs

INFO = model_info(30)


def test_defaults_and_help_come_from_the_engine_config():
    s = RunSettings()
    assert s.to_dict() == RunConfig().to_dict()
    assert default_value("boost", "merge_every") == RunConfig().boost.merge_every
    assert "kappa" in help_text("boost", "merge_every")


def test_rounds_and_trainable_parameters_follow_the_settings():
    s = RunSettings()
    s.update({"train": {"max_steps": 205}, "boost": {"merge_every": 10, "rank": 2, "layers_per_round": 10}})
    assert s.rounds() == 21  # ceil(205 / 10)
    assert s.trainable_params(INFO) == 10 * 2 * 7 * 2 * 576  # hidden × hidden estimate per target
    assert s.trainable_params(None) is None
    s.set("boost", "layers_per_round", None)
    assert s.k(30) == 15 and s.k(None) is None


def test_changes_are_announced_once_and_bad_values_rejected():
    s = RunSettings()
    seen = []
    s.subscribe("changed", lambda *a: seen.append(a))
    s.update({"train": {"batch_size": 2, "grad_accum": 2}})
    s.set("train", "batch_size", 2)  # unchanged: no notice
    assert seen == [("train", "batch_size", 2), ("train", "grad_accum", 2)]
    with pytest.raises(UserError):
        s.set("train", "batch_size", "many")
    skipped = s.load({"train": {"lr": "fast", "seed": 7}, "boost": {"no_such": 1}})
    assert s.get("train", "seed") == 7 and skipped == ["train.lr", "boost.no_such"]


def test_presets_scale_k_with_the_model():
    assert preset_changes("fast", 30)["boost"]["layers_per_round"] == 5
    assert preset_changes("quality", 30)["boost"]["layers_per_round"] == 30  # every layer
    assert preset_changes("fast", 30)["boost"]["sampling"] == "top-biased"
    assert preset_changes("balanced", 30)["boost"]["layers_per_round"] is None  # the engine's own: half


def test_each_preset_sets_what_it_was_measured_with():
    fast, quality = preset_changes("fast", 30), preset_changes("quality", 30)
    assert (fast["boost"]["carry_b"], fast["train"]["round_warmup"]) == (False, 2)
    assert (quality["boost"]["carry_b"], quality["train"]["round_warmup"], quality["boost"]["sampling"]) == \
        (True, 0, "top-biased")


def test_balanced_gives_back_the_engine_defaults_whatever_was_changed_by_hand():
    s = RunSettings()
    s.update({"boost": {"carry_b": False, "init": "gradient", "rank": 2, "sampling": "cyclic"},
              "train": {"round_warmup": 3}})
    s.update(preset_changes("fast", 30))
    s.update(preset_changes("balanced", 30))
    assert s.validated().to_dict() == RunConfig().validate().to_dict()


def steps(n, start=1, kappa=2):
    out = []
    for step in range(start, start + n):
        out.append(P.StepMetrics(step=step, round=(step - 1) // kappa + 1, loss=3.0 / step, lr=1e-3, grad_norm=1.0,
                                 layers=[0], seconds=0.1, tokens=10, tokens_per_s=100.0))
        if step % kappa == 0:
            out.append(P.RoundMerged(round=step // kappa, step=step, layers=[step % 4, 5], modules=2,
                                     booster_norm=0.1, merge_seconds=0.0, round_seconds=0.1))
    return out


def started(start_step=0):
    return P.RunStarted(run_dir="r", config=RunConfig(), model_info=model_info(6), data_report="", n_layers=6, total_steps=10,
                        total_rounds=5, start_step=start_step)


def test_series_appends_smooths_and_fills_the_heatmap():
    s = TrainingSeries()
    s.add(started())
    s.extend(steps(6))
    assert list(s.steps.view()) == [1, 2, 3, 4, 5, 6]
    assert s.smooth.view()[0] == pytest.approx(3.0)  # debiased: the first value is the first loss
    assert s.heat.shape == (5, 6) and s.heat.sum() == 6 and s.heat[1, [0, 5]].tolist() == [1.0, 1.0]
    assert len(s.merge_steps) == 3 and s.dirty >= {"loss", "heat"}
    s.add(P.MemorySample(step=6, device="cpu", allocated=None, reserved=None, peak=None, rss=100, predicted_peak=200))
    s.flush()
    assert math.isnan(s.allocated.view()[0]) and s.predicted_peak == 200


def test_the_heatmap_shows_the_round_in_progress_before_it_merges():
    from xgblora_app.state.series import IN_PROGRESS

    s = TrainingSeries()
    s.add(started())
    s.extend(steps(5))  # rounds 1 and 2 merged, round 3 one step in
    assert s.heat[2, 0] == IN_PROGRESS and s.heat[2].sum() == IN_PROGRESS
    s.extend([P.RoundRolledBack(round=3, step=4, reason="loss is nan", retry_lr_factor=0.5)])
    assert s.heat[2].sum() == 0  # the rolled-back round trained nothing that stays
    s.extend(steps(1, start=6))
    assert s.heat[2].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]  # merged: its own layers, fully


def test_series_takes_events_in_per_flush_not_per_event():
    s = TrainingSeries()
    s.flush()
    version = s.version
    for event in [started(), *steps(1000)]:
        s.add(event)
    assert len(s.steps) == 0 and s.version == version  # arriving costs an append, nothing more
    assert s.flush() and len(s.steps) == 1000 and s.version == version + 1
    assert not s.flush() and s.version == version + 1  # nothing new: nothing to draw
    s.add(P.LogLine(level="info", text="not plotted"))
    assert not s.flush()


def test_series_of_a_resumed_run_drops_the_steps_trained_again():
    s = TrainingSeries()
    s.add(started())
    s.extend(steps(7))
    s.extend([started(start_step=4)])
    assert list(s.steps.view()) == [1, 2, 3, 4] and len(s.rounds) == 2 and s.heat[2:].sum() == 0
    s.extend(steps(6, start=5))
    assert list(s.steps.view()) == list(range(1, 11)) and len(s.rounds) == 5


def test_series_grows_past_its_initial_capacity():
    s = TrainingSeries()
    s.add(started())
    s.extend(steps(1000))
    assert len(s.loss) == 1000 and np.all(np.diff(s.steps.view()) == 1)
    assert s.heat.shape[0] == 500  # rounds past total_rounds grow the heatmap


def test_runs_are_listed_newest_first_with_their_events(tmp_path):
    old = handmade_run_folder(tmp_path, "old")
    new = train_run_folder(tmp_path, "new", steps=10)
    (tmp_path / "not-a-run").mkdir()
    runs = list_runs(tmp_path)
    assert [r.path for r in runs] == [new, old]
    assert runs[0].status == "completed" and runs[0].step == 10 and runs[0].exportable
    events, bad = load_events(old)
    assert bad == 0 and sum(isinstance(e, P.StepMetrics) for e in events) == 4


def test_corrupt_and_killed_runs_are_told_apart(tmp_path):
    killed = train_run_folder(tmp_path, "killed", steps=20, killed_after=7)
    broken = handmade_run_folder(tmp_path, "broken")
    (broken / "run.json").write_text("{not json")
    with open(killed / "events.jsonl", "a") as fh:
        fh.write('{"type": "StepMetrics", "step": "x"}\n')
    runs = {r.name: r for r in list_runs(tmp_path)}
    assert runs["killed"].status == "training" and runs["killed"].resumable
    assert runs["broken"].status == "corrupt" and not runs["broken"].exportable
    assert load_events(killed)[1] == 1


def test_hugging_face_cache_listing(tmp_path):
    (tmp_path / "models--org--model-a" / "snapshots" / "abc").mkdir(parents=True)
    (tmp_path / "models--org--empty" / "snapshots").mkdir(parents=True)
    (tmp_path / "datasets--org--data" / "snapshots" / "x").mkdir(parents=True)
    assert cached_models(tmp_path) == ["org/model-a"]


def test_settings_saved_before_the_learning_rate_rule_keep_their_literal_rate():
    s = RunSettings()
    s.load({"train": {"lr": 0.01}, "boost": {"rank": 4}})
    assert s.get("train", "lr") == 0.01 and s.get("train", "lr_rule") == "fixed"
    assert s.effective_lr(30) == 0.01
    fresh = RunSettings()
    fresh.load(fresh.to_dict())  # saved with the rule: kept
    assert fresh.get("train", "lr_rule") == "scaled"
