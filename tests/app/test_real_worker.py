"""The window with the real engine worker on a tiny model: inspect, preflight, train,
kill -9 mid-run, resume, and the run history redrawn. Slow: real processes and torch."""

import json

import pytest
from PySide6.QtCore import Qt

from tests.conftest import build_tiny_llama
from tests.engine.conftest import save_tiny_model
from xgblora_app.main_window import MainWindow, real_client

pytestmark = pytest.mark.slow


@pytest.fixture
def real_window(qtbot, tmp_path, prefs):
    model = save_tiny_model(tmp_path / "tiny", build_tiny_llama())
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"w{i} w{i + 1} w{i + 2}", "output": f"w{i % 9}"})
                              for i in range(40)))
    prefs.setValue("run/settings", json.dumps({
        "model": {"name": str(model)}, "data": {"path": str(data), "seq_len": 32},
        "train": {"max_steps": 40, "batch_size": 2, "eval_every": 10},
        "boost": {"merge_every": 4, "layers_per_round": 2}}))
    window = MainWindow(real_client, runs_folder=tmp_path / "runs", settings=prefs)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.bridge.state == "idle" and not window.bridge.busy and not window.bridge.queue,
                    timeout=120_000)
    yield window
    window.close()


def test_inspect_preflight_train_kill_resume_and_history(qtbot, real_window):
    w = real_window
    assert w.model_panel.info_labels["n_layers"].text() == "4"
    assert "36</b> training" in w.data_panel.counts.text() and not w.data_panel.banner.isVisible()
    assert "2 of 4 layers" in w.method_panel.summary.text()
    w.preflight_panel.trial.setChecked(False)
    qtbot.mouseClick(w.preflight_panel.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.preflight_panel.bar.result is not None, timeout=120_000)
    assert w.preflight_panel.verdict.text() == "Fits"

    w.start()
    qtbot.waitUntil(lambda: w.progress.value() >= 8, timeout=120_000)
    w.bridge.client.kill()  # the engine dies mid-run, as under the OOM killer
    qtbot.waitUntil(lambda: w.resume_button.isVisible(), timeout=10_000)
    assert "SIGKILL" in w.banner.text() and w.isVisible()

    qtbot.mouseClick(w.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.status.text().startswith("Run completed after 40 steps"), timeout=240_000)
    series = w.train_panel.series
    assert len(series.steps) == 40 and list(series.steps.view()[:2]) == [1, 2]
    assert len(series.rounds) == 10 and series.heat.sum() == 20 and len(series.rss) == 40

    runs = w.runs_panel
    assert runs.count() == 1 and runs.runs[0].status == "completed"
    runs.table.selectRow(0)
    assert len(runs.series.steps) == 40 and len(runs.series.rounds) == 10

    # export the finished run from the Export panel, through the real worker
    ex = w.export_panel
    run_path = runs.runs[0].path
    ex.select_run(str(run_path))
    for fmt, box in ex.format_boxes.items():
        box.setChecked(fmt in ("hf", "peft"))
    ex.out.setText(str(run_path / "exports" / "e2e"))
    qtbot.mouseClick(ex.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: all(row.path for row in ex.rows.values()), timeout=240_000)
    assert set(ex.rows) == {"hf", "peft"}
    for row in ex.rows.values():
        assert row.result.text() and (run_path / "exports" / "e2e").exists()
