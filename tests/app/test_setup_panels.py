"""Model, Data, Method and Preflight panels against the scripted engine."""

import json
import math

import pytest
from PySide6 import QtGui
from PySide6.QtCore import Qt

from xgblora_app.demo_engine import DEMO_CPU, SMOLLM2_INFO, demo_data_report
from xgblora_app.panels.data_panel import DataPanel
from xgblora_app.panels.method_panel import MethodPanel
from xgblora_app.panels.model_panel import ModelPanel
from xgblora_app.panels.preflight_panel import PreflightPanel
from xgblora_app.panels.train_panel import TrainPanel
from xgblora_app.state.run_settings import help_text
from xgblora_engine import protocol as P
from xgblora_engine.config import RunConfig


# --- model ---------------------------------------------------------------------------
def test_model_info_is_shown_once_inspected(qtbot, panel, studio, fake):
    model = panel(ModelPanel)
    model.inspect()
    qtbot.waitUntil(lambda: model.info_labels["n_layers"].text() == "30", timeout=3000)
    assert fake.sent[-1].model == "default" and model.info_labels["architecture"].text() == "llama"
    assert "134.5M" in model.info_labels["n_params"].text() and studio.session.n_layers == 30


def test_a_model_that_cannot_load_is_explained_in_the_panel(qtbot, panel, studio):
    model = panel(ModelPanel)
    model.radios["hub"].setChecked(True)
    model.hub_id.setText("missing/model")
    model._choice_changed()
    assert studio.settings.get("model", "name") == "missing/model"
    qtbot.waitUntil(model.banner.isVisible, timeout=3000)
    assert "not in the Hugging Face cache" in model.banner.text() and "local folder" in model.banner.text()


def test_loading_options_edit_the_settings_both_ways(qtbot, panel, studio):
    model = panel(ModelPanel)
    model.quantize.setCurrentText("4bit")
    assert studio.settings.get("model", "quantize") == "4bit"
    studio.settings.set("model", "gradient_checkpointing", True)  # e.g. a preflight remedy
    assert model.checkpointing.isChecked()
    assert model.dtype.toolTip() == help_text("model", "dtype")


# --- devices ---------------------------------------------------------------------------
def test_one_device_is_listed_and_the_gpu_chooser_hidden(qtbot, panel, studio):
    model = panel(ModelPanel)
    assert [label.text() for label in model.device_labels] == ["cpu · 16 GB RAM (9.0 GB free)"]
    assert not model.gpu_row.isVisible() and studio.settings.get("model", "shard_gpus") == 1


@pytest.mark.parametrize("fake", [{"gpus": 2}], indirect=True)
def test_two_gpus_are_listed_and_choosing_both_shards_the_run(qtbot, panel, studio, fake):
    model = panel(ModelPanel)
    assert [label.text() for label in model.device_labels] == [
        "cpu · 16 GB RAM (9.0 GB free)", "cuda:0 NVIDIA GeForce RTX 4090 · 24 GB (21 GB free)",
        "cuda:1 NVIDIA GeForce RTX 4090 · 24 GB (21 GB free)"]
    assert model.gpu_row.isVisible() and model.gpus_for_run.maximum() == 2
    assert model.gpus_for_run.toolTip() == help_text("model", "shard_gpus")
    model.gpus_for_run.setValue(2)
    assert studio.settings.get("model", "shard_gpus") == 2
    train = panel(TrainPanel)
    train.start()
    start = next(c for c in fake.sent if isinstance(c, P.StartRun))
    assert start.config.model.shard_gpus == 2
    qtbot.waitUntil(lambda: studio.bridge.state == "training", timeout=3000)  # the engine took it


def test_a_restarted_worker_that_sees_two_gpus_shows_the_chooser(qtbot, panel, studio, fake):
    from xgblora_app.demo_engine import demo_gpus

    model = panel(ModelPanel)
    assert not model.gpu_row.isVisible()
    fake.devices = [DEMO_CPU] + demo_gpus(2)
    fake.die()
    qtbot.waitUntil(lambda: studio.bridge.state == "dead", timeout=3000)
    with qtbot.waitSignal(studio.bridge.hello, timeout=3000):
        studio.bridge.start()
    assert model.gpu_row.isVisible() and len(model.device_labels) == 3


@pytest.mark.parametrize("fake", [{"gpus": 2}], indirect=True)
def test_a_saved_gpu_count_this_machine_lacks_is_lowered(qtbot, panel, studio):
    studio.settings.set("model", "shard_gpus", 4)  # saved on a bigger machine
    model = panel(ModelPanel)
    assert studio.settings.get("model", "shard_gpus") == 2 and model.gpus_for_run.value() == 2
    model.show_devices([DEMO_CPU])  # a worker that sees no GPU
    assert studio.settings.get("model", "shard_gpus") == 1 and not model.gpu_row.isVisible()


# --- data ----------------------------------------------------------------------------
def test_sample_data_shows_format_counts_preview_and_histogram(qtbot, panel, studio):
    data = panel(DataPanel)
    data.check()
    qtbot.waitUntil(lambda: "training and" in data.counts.text(), timeout=5000)
    assert "alpaca" in data.detected.text() and data.mapping.rowCount() >= 2
    report = studio.session.data_report
    assert report.n_train > 0 and len(report.preview) == 3
    first = report.preview[0]
    shown = data.preview.toPlainText()
    assert first.text.splitlines()[0] in shown and "chat template" in data.preview_note.text()
    learned = first.text[slice(*first.spans[0])]
    assert learned.split()[0] in shown  # the reply, highlighted in the HTML
    assert data.bars.opts["height"] is not None and sum(data.bars.opts["height"]) > 100
    assert data.limit_line.value() == studio.settings.get("data", "seq_len")


def test_a_bad_data_file_gives_a_message_in_the_panel(qtbot, panel, studio, tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{not json\n')
    data = panel(DataPanel)
    data.file_path.setText(str(bad))
    data.radios["file"].setChecked(True)
    data._path_changed()
    qtbot.waitUntil(data.banner.isVisible, timeout=5000)
    assert "line 2" in data.banner.text() and data.counts.text() == "No usable data."
    assert data.isVisible() and data.banner.kind == "error"


def test_column_mapping_is_editable(qtbot, panel, studio, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"a{i}", "notes": f"n{i}"})
                              for i in range(20)))
    studio.settings.set("data", "path", str(path))
    data = panel(DataPanel)
    data.check()
    qtbot.waitUntil(lambda: data.mapping.rowCount() > 0, timeout=5000)
    fields = [data.mapping.cellWidget(r, 0).text().strip() for r in range(data.mapping.rowCount())]
    combo = data.mapping.cellWidget(fields.index("output"), 1)
    assert combo.currentText() == "answer"
    combo.setCurrentText("notes")
    assert studio.settings.get("data", "columns") == {"output": "notes"}
    qtbot.waitUntil(lambda: "output = 'notes'" in data.detected.text(), timeout=5000)


def test_hub_datasets_are_read_by_the_engine_not_the_window(qtbot, panel, studio, fake):
    data = panel(DataPanel)
    data.radios["hub"].setChecked(True)
    data.hub_id.setText("someone/some-data")
    data._path_changed()
    qtbot.waitUntil(lambda: any(isinstance(c, P.Inspect) and c.data == "someone/some-data" for c in fake.sent),
                    timeout=3000)
    qtbot.waitUntil(data.banner.isVisible, timeout=3000)  # the fake engine is offline too


# --- method --------------------------------------------------------------------------
def test_rounds_and_parameters_update_live(qtbot, panel, studio):
    studio.session.set_model_info(SMOLLM2_INFO)
    method = panel(MethodPanel)
    method.steps.setValue(205)
    method.kappa.setValue(10)
    assert "= 21 rounds" in method.summary.text() and "15 of 30 layers" in method.summary.text()
    assert "continues its B" in method.summary.text()
    method.carry_b.click()
    assert "starts from its last A" in method.summary.text()
    method.carry_b.click()
    method.k.setValue(5)
    method.rank.setValue(2)
    assert "≈ 80.6k" in method.summary.text()  # 5 layers × r 2 × 7 targets × 2 × 576
    assert studio.settings.get("boost", "layers_per_round") == 5
    assert len(method.picture.rows) == 4 and all(len(r) == 5 for r in method.picture.rows)
    method.kappa.setValue(205)  # one round: one row, not four
    assert len(method.picture.rows) == 1
    method.k.setValue(0)
    assert studio.settings.get("boost", "layers_per_round") is None  # auto
    method.sampling.setCurrentText("gradient")  # drawn from each round's gradient: no picture to predict
    assert not method.picture.rows and "chosen as the run goes" in method.picture.note


def test_the_booster_rate_follows_rank_and_layers_by_the_rule(qtbot, panel, studio):
    studio.session.set_model_info(SMOLLM2_INFO)
    method = panel(MethodPanel)
    method.lr.setValue(6e-3)
    method.k.setValue(10)
    method.rank.setValue(4)
    assert "peak rate of <b>0.0052</b>" in method.summary.text()
    method.rank.setValue(1)  # a quarter of the rank: twice the rate
    assert "peak rate of <b>0.0104</b>" in method.summary.text()
    method.lr_rule.setCurrentText("fixed")
    assert "peak rate of <b>0.006</b> (as given)" in method.summary.text()
    method.init.setCurrentText("gradient")
    assert studio.settings.get("boost", "init") == "gradient"


def test_carrying_between_rounds_is_a_click(qtbot, panel, studio):
    method = panel(MethodPanel)
    carry = not studio.settings.get("boost", "carry")
    qtbot.mouseClick(method.carry, Qt.MouseButton.LeftButton)
    assert studio.settings.get("boost", "carry") is carry
    assert help_text("boost", "carry") in method.carry.toolTip() and "Cost:" in method.carry.toolTip()
    studio.settings.set("boost", "carry", not carry)  # and back, from the settings
    assert method.carry.isChecked() is (not carry)
    studio.settings.set("boost", "carry", True)
    qtbot.mouseClick(method.carry_b, Qt.MouseButton.LeftButton)  # B toggled
    assert studio.settings.get("boost", "carry_b") is not RunConfig().boost.carry_b
    assert "Cost:" in method.carry_b.toolTip()
    studio.settings.set("boost", "carry", False)
    assert not method.carry_b.isEnabled()  # nothing is carried: no B either
    studio.settings.set("boost", "carry", True)
    qtbot.mouseClick(method.line_search, Qt.MouseButton.LeftButton)
    assert studio.settings.get("boost", "line_search") is not RunConfig().boost.line_search
    assert help_text("boost", "line_search") in method.line_search.toolTip() and "Cost:" in method.line_search.toolTip()
    method.init.setCurrentText("gradient")  # a start that sets A itself: nothing to carry
    assert not method.carry.isEnabled() and not method.carry_b.isEnabled()
    method.init.setCurrentText("gradient-first")  # aims a layer's first booster only: the rest carry
    assert method.carry.isEnabled() and method.carry_b.isEnabled()


def test_the_advanced_settings_are_folded_and_edit_the_settings(qtbot, panel, studio):
    method = panel(MethodPanel)
    assert not method.advanced.isVisibleTo(method)
    qtbot.mouseClick(method.advanced_toggle, Qt.MouseButton.LeftButton)
    assert method.advanced.isVisibleTo(method)
    edits = {("boost", "alpha"): 16.0, ("boost", "dropout"): 0.1, ("train", "weight_decay"): 0.01,
             ("train", "lr_ratio_b"): 4.0, ("train", "max_grad_norm"): 0.5, ("train", "samples"): 2,
             ("train", "sample_tokens"): 20, ("boost", "init_pool"): 2}
    for (section, key), value in edits.items():
        method.bind.widgets[(section, key)].setValue(value)
        assert studio.settings.get(section, key) == value, key
    method.bind.widgets[("boost", "alpha")].setValue(0.0)  # the minimum is "auto (2r)"
    assert studio.settings.get("boost", "alpha") is None
    targets = method.bind.widgets[("model", "target_modules")]
    targets.setText("q_proj, v_proj")
    targets.editingFinished.emit()
    assert studio.settings.get("model", "target_modules") == ["q_proj", "v_proj"]
    method.bind.widgets[("train", "schedule")].setCurrentText("constant")
    method.bind.widgets[("train", "report_to")].setCurrentText("tensorboard")
    assert studio.settings.get("train", "schedule") == "constant" and studio.settings.get("train", "report_to") == "tensorboard"
    studio.settings.set("model", "target_modules", None)  # and back, from the settings
    assert targets.text() == ""


def test_settings_saved_as_yaml_are_what_the_cli_reads(qtbot, panel, studio, tmp_path):
    from xgblora_engine.cli import build_parser, config_from_args

    method = panel(MethodPanel)
    studio.settings.update({"train": {"lr": 2e-3, "samples": 2}, "boost": {"rank": 8, "sampling": "gradient"}})
    path = tmp_path / "mine.yaml"
    method.save_settings(str(path))
    assert "xgblora train --config" in method.banner.text()
    cli = config_from_args(build_parser().parse_args(["train", "--config", str(path)]))
    assert cli.to_dict() == studio.settings.to_dict()
    studio.settings.update({"train": {"lr": 9e-3}, "boost": {"rank": 1}})
    method.load_settings(str(path))
    assert studio.settings.get("train", "lr") == 2e-3 and method.rank.value() == 8
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    method.load_settings(str(tmp_path / "bad.yaml"))
    assert method.banner.kind == "error" and "bad.yaml" in method.banner.text()


def test_presets_and_tooltips(qtbot, panel, studio):
    studio.session.set_model_info(SMOLLM2_INFO)
    method = panel(MethodPanel)
    qtbot.mouseClick(method.preset_buttons["quality"], Qt.MouseButton.LeftButton)
    assert method.rank.value() == 8 and method.sampling.currentText() == "top-biased" and method.k.value() == 30
    assert method.kappa.value() == 20
    # the presets' long tooltips are rich text, which Qt wraps; plain text runs off the screen
    tip = method.preset_buttons["quality"].toolTip()
    assert QtGui.Qt.mightBeRichText(tip) and "every layer every round" in tip
    assert help_text("boost", "merge_every") in method.kappa.toolTip() and "Cost:" in method.kappa.toolTip()


def test_defaults_button_resets_the_method_but_keeps_model_and_data(qtbot, panel, studio):
    method = panel(MethodPanel)
    studio.settings.set_values({"boost": {"rank": 3, "merge_every": 7}, "train": {"lr": 0.02},
                                "data": {"seq_len": 96}})
    qtbot.mouseClick(method.defaults_button, Qt.MouseButton.LeftButton)
    defaults = RunConfig()
    assert method.rank.value() == defaults.boost.rank and method.kappa.value() == defaults.boost.merge_every
    assert studio.settings.get("train", "lr") == defaults.train.lr
    assert studio.settings.get("data", "seq_len") == 96


def test_length_in_epochs_uses_the_data_count(qtbot, panel, studio):
    method = panel(MethodPanel)
    assert not method.epochs.isEnabled()
    studio.session.set_data_report(demo_data_report(RunConfig()))
    n_train = studio.session.data_report.n_train
    method.by_epochs.setChecked(True)
    method.batch.setValue(4)
    method.epochs.setValue(2.0)
    assert studio.settings.get("train", "max_steps") == math.ceil(2 * n_train / 4)


# --- preflight -----------------------------------------------------------------------
def test_preflight_verdict_and_one_click_remedies_change_the_method(qtbot, panel, studio, fake):
    fake.available = 900 * 2**20
    studio.settings.update({"train": {"batch_size": 8}, "data": {"seq_len": 512}})
    preflight = panel(PreflightPanel)
    method = MethodPanel(studio)
    qtbot.addWidget(method)
    qtbot.mouseClick(preflight.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: preflight.verdict.text() == "Will not fit", timeout=3000)
    assert fake.sent[-1].trial and preflight.bar.result.verdict == "wont_fit"
    before = preflight.bar.result.predicted_peak
    assert "weights" in preflight.parts.text() and preflight.remedies_box.isVisible()
    batch = next(b for b in preflight.remedy_buttons if b.text().startswith("batch"))
    qtbot.mouseClick(batch, Qt.MouseButton.LeftButton)
    assert method.batch.value() == 4 and method.accum.value() == 2  # the Method panel shows the change
    assert "(settings changed)" in preflight.verdict.text()
    for label in ("sequences", "load the frozen base in 4-bit"):
        button = next(b for b in preflight.remedy_buttons if b.text().startswith(label))
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert studio.settings.get("model", "quantize") == "4bit" and method.seq_len.value() == 256
    fake.available = 8 * 2**30
    preflight.run()
    qtbot.waitUntil(lambda: preflight.verdict.text() == "Fits", timeout=3000)
    assert not preflight.remedies_box.isVisible() and preflight.bar.result.predicted_peak < before / 2


def test_memory_limit_is_sent_with_the_estimate(qtbot, panel, studio, fake):
    preflight = panel(PreflightPanel)
    preflight.limit.setValue(2.0)
    preflight.trial.setChecked(False)
    preflight.run()
    qtbot.waitUntil(lambda: preflight.bar.result is not None, timeout=3000)
    estimate = fake.sent[-1]
    assert estimate.memory_limit_bytes == 2 * 2**30 and not estimate.trial
    assert preflight.bar.result.available == 2 * 2**30
