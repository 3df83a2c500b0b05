"""Export, Try-it and Runs panels on run folders in tmp_path."""

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tests.app.helpers import handmade_run_folder, train_run_folder
from xgblora_app.panels.chat_panel import ChatPanel
from xgblora_app.panels.export_panel import ExportPanel
from xgblora_app.panels.runs_panel import RunsPanel
from xgblora_engine import protocol as P


# --- export --------------------------------------------------------------------------
def test_export_shows_the_result_of_each_format(qtbot, panel, studio, fake, runs_root):
    run = train_run_folder(runs_root, "done", steps=10)
    fake.failing_formats = {"gguf"}
    export = panel(ExportPanel)
    assert export.run.currentData() == str(run) and export.out.text() == str(run / "exports")
    for fmt in ("peft", "gguf", "ollama"):
        export.format_boxes[fmt].setChecked(True)
    qtbot.mouseClick(export.export_button, Qt.MouseButton.LeftButton)
    sent = fake.sent[-1]
    assert isinstance(sent, P.Export) and sent.formats == ["hf", "peft", "gguf", "ollama"] and sent.quant == "f16"
    qtbot.waitUntil(lambda: export.export_button.isEnabled(), timeout=5000)
    rows = export.rows
    assert rows["hf"].stage.text() == "verified" and rows["hf"].open_button.isEnabled()
    assert rows["gguf"].stage.text() == "FAILED" and "logits differ" in rows["gguf"].result.text()
    assert not rows["gguf"].copy_button.isEnabled()
    assert rows["ollama"].command.text().startswith("ollama create")
    assert "same logits" in rows["peft"].result.text() and rows["peft"].progress.value() == 100


def test_exporting_again_makes_a_new_folder_and_lists_the_earlier_ones(qtbot, panel, studio, fake, runs_root):
    run = train_run_folder(runs_root, "done", steps=10)
    export = panel(ExportPanel)
    export.format_boxes["ollama"].setChecked(True)
    assert export.ollama_name.isEnabled() and export.ollama_name.placeholderText() == "done"
    export.ollama_name.setText("My Tuned")
    for _ in range(2):
        qtbot.mouseClick(export.export_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: export.export_button.isEnabled(), timeout=5000)
    sent = fake.sent[-1]
    assert sent.out is None and sent.into == str(run / "exports") and sent.ollama_name == "My Tuned"
    assert export.rows["hf"].path == str(run / "exports" / "hf+ollama-f16-2" / "hf")
    assert export.rows["ollama"].command.text().startswith("ollama create my-tuned -f ")
    assert export.past.text().count("✓") == 4 and "hf+ollama-f16-1" in export.past.text()


def test_a_push_to_the_hub_is_sent_and_shown_as_its_own_row(qtbot, panel, studio, fake, runs_root):
    train_run_folder(runs_root, "tuned", steps=10)
    ex = panel(ExportPanel)
    ex.push_to.setText("me/tuned")
    qtbot.mouseClick(ex.export_button, Qt.MouseButton.LeftButton)
    sent = fake.sent[-1]
    assert isinstance(sent, P.Export) and sent.push_to == "me/tuned" and sent.public is False
    qtbot.waitUntil(lambda: ex.rows["hub"].stage.text() == "pushed", timeout=3000)
    assert set(ex.rows) == {"hf", "hub"} and ex.rows["hub"].command.text() == "hf download me/tuned"
    assert "(private" in ex.rows["hub"].result.text()


def test_export_explains_what_is_missing(qtbot, panel, studio, fake, runs_root):
    export = panel(ExportPanel)
    export.export()
    assert export.banner.isVisible() and "Pick a run" in export.banner.text()
    assert not any(isinstance(c, P.Export) for c in fake.sent)


# --- try it --------------------------------------------------------------------------
def test_a_conversation_with_base_and_fine_tuned_side_by_side(qtbot, panel, studio, fake, runs_root):
    run = train_run_folder(runs_root, "tuned", steps=10)
    chat = panel(ChatPanel)
    assert chat.run.currentData() == str(run) and "tuned" in chat.tuned_pane.title()
    chat.system.setText("Answer in one sentence.")
    chat.temperature.setValue(0.7)
    chat.seed.setValue(3)
    chat.prompt.setPlainText("What is a lambda?")
    qtbot.mouseClick(chat.generate_button, Qt.MouseButton.LeftButton)
    generates = [c for c in fake.sent if isinstance(c, P.Generate)]
    assert [g.run_dir for g in generates] == [None]  # the second waits for the first
    assert not chat.generate_button.isEnabled() and chat.stop_button.isEnabled()
    qtbot.waitUntil(lambda: chat.generate_button.isEnabled(), timeout=3000)
    first = [c for c in fake.sent if isinstance(c, P.Generate)]
    assert [g.run_dir for g in first] == [None, str(run)] and all(not g.history for g in first)
    assert first[1].system == "Answer in one sentence." and (first[1].temperature, first[1].seed) == (0.7, 3)
    assert "not sure" in chat.base_pane.view.toPlainText()
    assert "(fine-tuned, turn 1)" in chat.tuned_pane.view.toPlainText()
    assert "end of turn" in chat.tuned_pane.meta.text() and "first token after 0.20 s" in chat.tuned_pane.meta.text()
    # the second message carries each side's own history
    chat.prompt.setPlainText("And a closure?")
    chat.generate()
    qtbot.waitUntil(lambda: chat.generate_button.isEnabled(), timeout=3000)
    second = [c for c in fake.sent if isinstance(c, P.Generate)][2:]
    assert [[t.role for t in g.history] for g in second] == [["user", "assistant"]] * 2
    assert "(fine-tuned" in second[1].history[1].content and "not sure" in second[0].history[1].content
    text = chat.tuned_pane.view.toPlainText()
    assert text.index("What is a lambda?") < text.index("turn 1") < text.index("And a closure?") < text.index("turn 2")
    qtbot.mouseClick(chat.new_button, Qt.MouseButton.LeftButton)
    assert chat.tuned_pane.view.toPlainText() == "" and not chat.tuned_pane.turns


def test_answers_stream_in_and_stop_keeps_what_was_said(qtbot, panel, studio, fake, runs_root):
    train_run_folder(runs_root, "tuned", steps=10)
    fake.steps_per_poll = 1  # a word per poll
    chat = panel(ChatPanel)
    chat.prompt.setPlainText("What is a lambda?")
    chat.generate()
    pane = chat.base_pane
    qtbot.waitUntil(lambda: "I'm sorry," in pane.view.toPlainText(), timeout=3000)
    assert "▍" in pane.view.toPlainText()  # still being written
    qtbot.mouseClick(chat.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.generate_button.isEnabled(), timeout=3000)
    assert "stopped by you" in pane.meta.text() and "▍" not in pane.view.toPlainText()
    said = pane.turns[-1].content
    assert said.startswith("I'm sorry,") and not said.endswith("mean?")  # cut short, kept
    assert "stopped before its turn" in chat.tuned_pane.view.toPlainText()  # the queued side never ran
    assert [type(c).__name__ for c in fake.sent].count("Generate") == 1


def test_ctrl_return_in_the_prompt_generates(qtbot, panel, studio, fake, runs_root):
    train_run_folder(runs_root, "tuned", steps=10)
    chat = panel(ChatPanel)
    chat.prompt.setPlainText("hi")
    chat.prompt.setFocus()
    qtbot.keyClick(chat.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert any(isinstance(c, P.Generate) for c in fake.sent)


# --- runs ----------------------------------------------------------------------------
def test_runs_panel_lists_run_folders_and_redraws_their_plots(qtbot, panel, studio, runs_root):
    hand = handmade_run_folder(runs_root)
    runs = panel(RunsPanel)
    assert runs.count() == 1 and runs.table.item(0, 1).text() == "completed"
    runs.table.selectRow(0)
    xs = list(runs.plots.raw.xData)
    assert xs == [1, 2, 3, 4] and list(runs.plots.eval.xData) == [4]
    assert runs.series.heat.shape == (2, 6) and runs.series.heat[1, [0, 5]].tolist() == [1.0, 1.0]
    runs.plots.refresh(force=True)
    assert runs.plots.heat_image.image.sum() == 4 and runs.plots.predicted_line.isVisible()
    ticks = [v for axis in ("bottom", "left") for _, values in
             runs.plots.heat_plot.getAxis(axis).tickValues(0.5, 2.5, 300) for v in values]
    assert ticks and all(v == int(v) for v in ticks)  # rounds and layers: no halves
    assert "merge_every" in runs.config_view.toPlainText()
    assert runs.export_button.isEnabled() and not runs.resume_button.isEnabled()
    assert runs.selected().path == hand


def test_two_runs_compared_side_by_side_and_the_table_sorts(qtbot, panel, studio, runs_root):
    train_run_folder(runs_root, "slow-lr", steps=20, lr=1e-3)
    train_run_folder(runs_root, "fast-lr", steps=30, lr=1e-2)
    runs = panel(RunsPanel)
    header = [runs.table.horizontalHeaderItem(c).text() for c in range(runs.table.columnCount())]
    assert header[:9] == ["Run", "Status", "Model", "Data", "Rank", "k", "κ", "lr", "Steps"]
    row = {h: runs.table.item(0, c).text() for c, h in enumerate(header)}
    assert row["Rank"] == "8" and row["κ"] == "5" and row["Sample F1"] != "–" and row["Peak"].endswith("GB")
    runs.sort_by(header.index("Steps"))
    assert [r.name for r in runs.runs] == ["slow-lr", "fast-lr"]
    runs.sort_by(header.index("Steps"))  # again: the other way
    assert [r.name for r in runs.runs] == ["fast-lr", "slow-lr"]
    runs.table.selectAll()
    assert runs.selected() is None and not runs.resume_button.isEnabled()  # buttons act on one run
    assert runs.details.currentWidget() is runs.comparison
    compare = runs.comparison
    for plot, _, _ in compare.plots.values():
        assert len(plot.listDataItems()) == 2 and [n for _, n in
                                                   ((i, i.name()) for i in plot.listDataItems())] == ["fast-lr", "slow-lr"]
    rows = [compare.table.verticalHeaderItem(r).text() for r in range(compare.table.rowCount())]
    assert rows[:3] == ["final training loss", "final held-out loss", "sample token F1"]
    assert "train.lr" in rows and "train.max_steps" in rows and "boost.rank" not in rows
    lr_row = rows.index("train.lr")
    assert [compare.table.item(lr_row, c).text() for c in range(2)] == ["0.01", "0.001"]
    runs.select(str(runs_root / "fast-lr"))  # one run again: its own plots
    assert runs.selected().name == "fast-lr" and compare.note.isVisible()


def test_killed_runs_can_be_resumed_from_history(qtbot, panel, studio, runs_root):
    train_run_folder(runs_root, "killed", steps=20, killed_after=6)
    runs = panel(RunsPanel)
    steps = [runs.table.horizontalHeaderItem(c).text() for c in range(runs.table.columnCount())].index("Steps")
    assert runs.table.item(0, steps).text() == "6 / 20"  # what it trained, though its checkpoint is at 5
    assert runs.runs[0].step == 5  # where a resume starts
    runs.table.selectRow(0)
    assert runs.resume_button.isEnabled()
    with qtbot.waitSignal(runs.resume_requested) as blocker:
        qtbot.mouseClick(runs.resume_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [str(runs_root / "killed")]


def test_delete_asks_first(qtbot, panel, studio, runs_root, monkeypatch):
    handmade_run_folder(runs_root, "keep")
    runs = panel(RunsPanel)
    runs.table.selectRow(0)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    runs.delete_selected()
    assert (runs_root / "keep").exists() and runs.count() == 1
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    runs.delete_selected()
    assert not (runs_root / "keep").exists() and runs.count() == 0


def test_a_corrupt_run_is_reported_not_fatal(qtbot, panel, studio, runs_root):
    broken = handmade_run_folder(runs_root, "broken")
    (broken / "run.json").write_text("{")
    runs = panel(RunsPanel)
    runs.table.selectRow(0)
    assert runs.table.item(0, 1).text() == "corrupt" and "corrupt" in runs.banner.text()
