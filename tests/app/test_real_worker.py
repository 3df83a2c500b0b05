"""The window with the real engine worker on a tiny model: inspect, preflight, train,
kill -9 mid-run, resume, and the run history redrawn. Slow: real processes and torch."""

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.conftest import build_tiny_llama
from tests.engine.conftest import save_tiny_model
from xgblora_app.main_window import MainWindow, real_client
from xgblora_engine.config import RunConfig, load_config_file
from xgblora_engine.runs import list_runs

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

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
    # the real engine answered held-out prompts at every evaluation, the base model first
    assert [s.step for s in series.samples][-1] == 40 and series.samples[0].step == 0
    assert all(len(s.answers) == 4 for s in series.samples)
    qtbot.waitUntil(lambda: w.train_panel.samples_view.table.rowCount() == 4, timeout=2000)

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
    assert ex.out.text() == str(run_path / "exports")  # a new folder in there per export
    qtbot.mouseClick(ex.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: all(row.path for row in ex.rows.values()), timeout=240_000)
    assert set(ex.rows) == {"hf", "peft"}
    for fmt, row in ex.rows.items():
        assert row.result.text() and row.path == str(run_path / "exports" / "hf+peft-1" / fmt)
    assert ex.past.text().count("✓") == 2  # listed from the records the real engine wrote


def test_a_copied_run_has_the_same_settings_overlays_its_source_and_answers_in_a_stream(qtbot, real_window):
    w = real_window
    w.form.set_values({"train": {"max_steps": 8, "eval_every": 4}, "boost": {"rank": 3}})
    w.start()
    qtbot.waitUntil(lambda: w.status.text().startswith("Run completed after 8 steps"), timeout=120_000)
    runs = w.runs_panel
    runs.refresh()
    first = runs.runs[0].path
    w.form.set_values({"boost": {"rank": 5}, "train": {"max_steps": 12}})  # edited since
    runs.select(str(first))
    qtbot.mouseClick(runs.copy_button, Qt.MouseButton.LeftButton)
    assert w.studio.settings.get("boost", "rank") == 3 and w.studio.settings.get("train", "max_steps") == 8
    w.start()
    qtbot.waitUntil(lambda: w.status.text().startswith("Run completed after 8 steps")
                    and w.studio.session.run_dir != str(first), timeout=120_000)
    second = Path(w.studio.session.run_dir)
    assert RunConfig.from_saved(load_config_file(second / "config.yaml")) == \
        RunConfig.from_saved(load_config_file(first / "config.yaml"))

    runs.refresh()
    runs.table.selectAll()
    assert runs.details.currentWidget() is runs.comparison
    for plot, _, _ in runs.comparison.plots.values():
        assert len(plot.listDataItems()) == 2

    chunks = []
    w.bridge.generation_chunk.connect(chunks.append)
    chat = w.chat_panel
    chat.run.select(str(second))
    chat.compare.setChecked(False)
    chat.max_tokens.setValue(40)
    chat.prompt.setPlainText("w1 w2 w3")
    chat.generate()
    qtbot.waitUntil(lambda: chat.generate_button.isEnabled(), timeout=60_000)
    assert len(chat.tuned_pane.turns) == 2 and chat.tuned_pane.turns[-1].content
    assert len(chunks) >= 2  # the reply arrived in pieces, as it was generated
    assert "".join(c.text for c in chunks).strip() == chat.tuned_pane.turns[-1].content.strip()


def save_chatml_tokenizer(path):
    """A word-level tokenizer with a ChatML template, over the tiny model's 128 ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(120)] + ["system", "user", "assistant"]
    vocab = {w: i for i, w in enumerate(words)} | {"<|im_start|>": 123, "<|im_end|>": 124, "<unk>": 125, "<pad>": 126}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHATML
    fast.save_pretrained(path)


def test_the_data_panel_shows_the_real_engine_s_rendered_preview(qtbot, tmp_path, prefs):
    from xgblora_app.context import Studio
    from xgblora_app.engine_bridge import EngineBridge
    from xgblora_app.panels.data_panel import DataPanel
    from xgblora_app.state.run_settings import RunSettings
    from xgblora_app.state.session import Session

    model = tmp_path / "tiny-chatml"
    build_tiny_llama().save_pretrained(model)
    save_chatml_tokenizer(model)
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"w{i} w{i + 1}"},
                                                       {"role": "assistant", "content": f"w{i + 2} w{i + 3}"}]})
                              for i in range(20)))
    settings = RunSettings()
    settings.update({"model": {"name": str(model)}, "data": {"path": str(data), "seq_len": 12}})
    bridge = EngineBridge(real_client)
    studio = Studio(bridge, settings, Session(tmp_path / "runs"), prefs)
    panel = DataPanel(studio)
    qtbot.addWidget(panel)
    try:
        bridge.start()
        panel.check()
        qtbot.waitUntil(lambda: studio.session.data_report is not None, timeout=120_000)
        report = studio.session.data_report
        assert report.truncated == 0 and len(report.preview) == 3
        first = report.preview[0]
        assert first.text.startswith("<|im_start|> user w0 w1 <|im_end|> <|im_start|> assistant")
        assert [first.text[a:b].strip() for a, b in first.spans] == ["w2 w3 <|im_end|>"]
        shown = panel.preview.toPlainText()
        assert "<|im_start|> assistant w2 w3 <|im_end|>" in shown and "<|im_start|> assistant w4 w5" in shown
        assert "background" in panel.preview.toHtml()  # the learned tokens are highlighted
        assert "tokens the engine trains on" in panel.preview_note.text()

        settings.set("data", "seq_len", 9)  # too long: the prompt's start goes, the reply stays whole
        qtbot.waitUntil(lambda: studio.session.data_report.seq_len == 9, timeout=120_000)
        report = studio.session.data_report
        assert report.truncated == report.n_train and all(p.truncated for p in report.preview)
        first = report.preview[0]
        assert first.text.rstrip().endswith("assistant w2 w3 <|im_end|>") and not first.text.startswith("<|im_start|> user w0")
        assert "cut above" in panel.preview.toPlainText() and "(100%)" in panel.counts.text()
    finally:
        bridge.close()


def test_a_hub_model_downloads_with_progress_a_stop_cancels_and_a_start_continues(qtbot, tmp_path, prefs,
                                                                                    monkeypatch, request):
    """The real worker fetches an uncached Hub id from a local stand-in for the Hub: the
    Train panel shows the bytes, Stop cancels with what to do next, Start finishes it."""
    from tests.hub_standin import HubStandIn

    repo = save_tiny_model(tmp_path / "repo", build_tiny_llama())
    (repo / "model.safetensors").unlink()
    build_tiny_llama().save_pretrained(repo, max_shard_size="40KB")  # shards served in turn, slowly
    hub = HubStandIn({"me/tiny": repo}, seconds_per_mb=15, one_at_a_time=True)
    request.addfinalizer(hub.close)
    for key, value in hub.env(tmp_path / "hf-cache").items():
        monkeypatch.setenv(key, value)  # the worker process reads them at its start
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"w{i} w{i + 1}", "output": f"w{i % 9}"}) for i in range(20)))
    prefs.setValue("run/overrides", json.dumps({
        "model": {"name": "me/tiny"}, "data": {"path": str(data), "seq_len": 32},
        "train": {"max_steps": 4, "batch_size": 2, "eval_every": 0}, "boost": {"merge_every": 2}}))
    w = MainWindow(real_client, runs_folder=tmp_path / "runs", settings=prefs)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.bridge.state == "idle" and not w.bridge.busy and not w.bridge.queue, timeout=120_000)
    downloads = []
    w.bridge.download_progress.connect(downloads.append)

    w.start()
    qtbot.waitUntil(lambda: bool(downloads), timeout=120_000)
    assert w.train_panel.progress.format() == "%p% downloaded"
    assert w.status.text().startswith("Downloading me/tiny:") and "Stop cancels it" in w.status.text()
    qtbot.mouseClick(w.train_panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.status.text() == "The download of 'me/tiny' was stopped.", timeout=60_000)
    assert "continue it" in w.banner.text()
    assert 0 < downloads[-1].done_bytes < downloads[-1].total_bytes
    [stopped] = list_runs(tmp_path / "runs")
    assert stopped.status == "stopped"  # a Stop, not a failure

    hub.seconds_per_mb = 0
    w.start()
    qtbot.waitUntil(lambda: w.status.text().startswith("Run completed after 4 steps"), timeout=120_000)
    assert downloads[-1].done_bytes == downloads[-1].total_bytes
    w.close()
