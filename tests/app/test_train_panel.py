"""Train panel: start → live plots; pause/continue/stop commands; warnings; a dead worker."""

import pytest
from PySide6.QtCore import Qt

from xgblora_app.panels.train_panel import TrainPanel
from xgblora_engine import protocol as P


def xs(curve):
    """The data a curve was given (getData() returns the clipped, downsampled view)."""
    return [] if curve.xData is None else list(curve.xData)


def short_run(studio, steps=20, kappa=5):
    studio.settings.update({"train": {"max_steps": steps, "eval_every": 10}, "boost": {"merge_every": kappa}})


def test_start_sends_the_settings_and_the_plots_fill(qtbot, panel, studio, fake):
    short_run(studio)
    train = panel(TrainPanel)
    assert train.progress.text() == "no run yet"  # not the bar's own "0 of 100"
    qtbot.mouseClick(train.start_button, Qt.MouseButton.LeftButton)
    start = fake.sent[-1]
    assert isinstance(start, P.StartRun) and start.config.train.max_steps == 20
    assert start.run_dir.startswith(str(studio.session.runs_root))
    qtbot.waitUntil(lambda: train.status.text().startswith("Run completed"), timeout=5000)
    qtbot.waitUntil(lambda: len(xs(train.plots.raw)) == 20, timeout=2000)
    assert len(xs(train.plots.smooth)) == 20
    assert xs(train.plots.eval) == [0, 10, 20]  # the base model first, as the trainer measures it
    assert "held-out loss" in train.status.text() and "(at step 20)" in train.status.text()
    assert len(train.plots.merges.data) == 4  # a marker per merge
    assert xs(train.plots.rss_curve) and train.plots.predicted_line.isVisible()
    assert len(xs(train.plots.speed)) == 20 and len(xs(train.plots.lr)) == 20
    assert train.progress.value() == 20 and train.progress.text() == "step 20 of 20" and train.start_button.isEnabled()
    assert studio.session.run_dir == start.run_dir


def test_y_ranges_hold_the_data_and_move_only_in_steps(qtbot, panel, studio, fake):
    """The plots set their y ranges themselves: pyqtgraph's auto-range would move them while
    each frame is painted and paint every plot twice. A range contains its data and moves
    when the data leave it, not for every new point."""
    short_run(studio)
    train = panel(TrainPanel)
    train.start()
    qtbot.waitUntil(lambda: train.status.text().startswith("Run completed"), timeout=5000)
    train.plots.refresh(force=True)
    for plot, values in ((train.plots.loss_plot, train.series.loss.view()),
                         (train.plots.speed_plot, train.series.tokens_per_s.view()),
                         (train.plots.lr_plot, train.series.lr.view())):
        assert not plot.vb.autoRangeEnabled()[1]
        bottom, top = plot.vb.viewRange()[1]
        assert bottom <= values.min() and values.max() <= top
    loss_range = train.plots.loss_plot.vb.viewRange()[1]
    series = train.series
    inside = (loss_range[0] + loss_range[1]) / 2
    series.add(P.StepMetrics(step=21, round=5, loss=inside, lr=1e-3, grad_norm=1.0, layers=[0],
                                     seconds=0.1, tokens=64, tokens_per_s=640.0))
    train.plots.refresh(force=True)
    assert train.plots.loss_plot.vb.viewRange()[1] == loss_range  # a point inside: nothing moves
    series.add(P.StepMetrics(step=22, round=5, loss=loss_range[0] - 1.0, lr=1e-3, grad_norm=1.0,
                                     layers=[0], seconds=0.1, tokens=64, tokens_per_s=640.0))
    train.plots.refresh(force=True)
    assert train.plots.loss_plot.vb.viewRange()[1][0] < loss_range[0] - 1.0  # below it: the range follows


def test_held_out_plot_shows_the_last_evaluation(qtbot, panel, studio, fake):
    """The held-out plot is narrower than the loss plot above it (its F1 axis is at the right);
    lined up by screen position, its step axis stopped short of the run's last evaluation."""
    short_run(studio)
    train = panel(TrainPanel)
    train.start()
    qtbot.waitUntil(lambda: train.status.text().startswith("Run completed"), timeout=5000)
    train.plots.refresh(force=True)
    qtbot.wait(50)  # the layout settles: the right axis is shown once sample answers arrive
    plots = train.plots
    assert plots.eval_plot.getAxis("right").isVisible()
    assert plots.eval_plot.vb.width() < plots.loss_plot.vb.width()
    loss_steps, eval_steps = plots.loss_plot.vb.viewRange()[0], plots.eval_plot.vb.viewRange()[0]
    assert eval_steps == pytest.approx(loss_steps) and eval_steps[1] >= 20
    plots.loss_plot.setXRange(5, 15, padding=0)  # zooming one zooms the other, by value
    assert plots.eval_plot.vb.viewRange()[0] == pytest.approx([5, 15])


def test_heatmap_fills_round_by_round(qtbot, panel, studio, fake):
    short_run(studio, steps=30, kappa=3)
    studio.settings.set("boost", "layers_per_round", 4)
    fake.steps_per_poll = 1
    train = panel(TrainPanel)
    train.start()
    qtbot.waitUntil(lambda: len(train.series.rounds) >= 2, timeout=3000)
    partial = train.series.heat.sum()
    assert train.series.heat.shape == (10, 30) and 0 < partial < 40
    qtbot.waitUntil(lambda: len(train.series.rounds) == 10, timeout=5000)
    qtbot.waitUntil(lambda: train.plots.heat_image.image is not None
                    and train.plots.heat_image.image.sum() == 40, timeout=2000)
    assert train.plots.heat_image.image.shape == (30, 10)  # layers up, rounds across


def test_pause_continue_and_stop_send_their_commands(qtbot, panel, studio, fake):
    short_run(studio, steps=500)
    fake.steps_per_poll = 1
    train = panel(TrainPanel)
    train.start()
    qtbot.waitUntil(lambda: train.pause_button.isEnabled(), timeout=3000)
    qtbot.mouseClick(train.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: train.continue_button.isEnabled(), timeout=2000)
    assert "Paused" in train.status.text() and not train.pause_button.isEnabled()
    qtbot.mouseClick(train.continue_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: train.pause_button.isEnabled(), timeout=2000)
    qtbot.mouseClick(train.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: train.status.text().startswith("Run stopped"), timeout=3000)
    assert fake.sent_types()[-4:] == ["StartRun", "Pause", "Resume", "Stop"]
    assert train.resume_button.isVisible()  # a stopped run can be resumed


def test_worker_death_keeps_the_window_says_why_and_resumes(qtbot, panel, studio, fake):
    short_run(studio, steps=40)
    fake.die_at_step = 12
    train = panel(TrainPanel)
    train.start()
    qtbot.waitUntil(lambda: train.banner.isVisible() and "SIGKILL" in train.banner.text(), timeout=5000)
    assert "ran out of memory" in train.banner.text() and train.isVisible()
    assert train.resume_button.isVisible() and studio.bridge.state == "dead"
    fake.die_at_step = None
    qtbot.mouseClick(train.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: train.status.text().startswith("Run completed"), timeout=5000)
    assert fake.starts == 2 and fake.sent_types()[-1] == "ResumeRun"
    resume = fake.sent[-1]
    assert resume.run_dir == studio.session.run_dir
    qtbot.waitUntil(lambda: xs(train.plots.raw)[-1] == 40, timeout=2000)  # next 20 Hz redraw
    steps = xs(train.plots.raw)
    assert steps[0] == 1 and steps[-1] == 40 and len(steps) == 40  # resumed steps replace none twice


def test_the_log_says_at_what_multiple_a_line_searched_round_was_merged(qtbot, panel, studio, fake):
    short_run(studio)
    studio.settings.set("boost", "line_search", True)
    train = panel(TrainPanel)
    train.start()
    qtbot.waitUntil(lambda: train.status.text().startswith("Run completed"), timeout=5000)
    qtbot.waitUntil(lambda: "round 4 merged at " in train.log_view.toPlainText(), timeout=2000)
    merges = [line for line in train.log_view.toPlainText().splitlines() if " merged " in line]
    assert len(merges) == 4 and all("× its update at step" in line for line in merges)


def test_nan_round_rollback_is_shown_with_what_happens_next(qtbot, panel, studio, fake):
    short_run(studio)
    fake.nan_round = 2
    train = panel(TrainPanel)
    train.start()
    qtbot.waitUntil(lambda: "rolled back" in train.banner.text(), timeout=5000)
    assert train.banner.kind == "warning" and "half the learning rate" in train.banner.text()


def test_a_refused_start_offers_to_start_anyway(qtbot, panel, studio, fake):
    train = panel(TrainPanel)
    studio.bridge.dispatch(P.Error(message="predicted peak 9 GB of 4 GB available on cpu: will not fit; "
                                           "training was not started", hint="batch 4 → 2", kind="user"))
    assert train.banner.isVisible() and "Start anyway" in [
        b.text() for b in train.banner.findChildren(type(train.start_button))]


def test_invalid_settings_are_explained_in_the_panel(qtbot, panel, studio, fake):
    train = panel(TrainPanel)
    studio.settings.cfg.boost.merge_every = 0  # as if loaded from a hand-edited file
    train.start()
    assert "merge interval" in train.banner.text() and "StartRun" not in fake.sent_types()


def test_events_of_other_jobs_do_not_touch_the_run_view(qtbot, panel, studio, fake):
    train = panel(TrainPanel)
    studio.bridge.submit(P.Inspect(data="/no/such/file.jsonl"))
    qtbot.waitUntil(lambda: not studio.bridge.busy, timeout=2000)
    assert not train.banner.isVisible() and len(train.series.steps) == 0


def test_a_run_started_as_the_last_one_ends_is_followed_to_its_end(qtbot, panel, studio, fake):
    short_run(studio, steps=10)
    train = panel(TrainPanel)
    follow_up = []

    def start_next(event):
        if not follow_up:  # queued behind the finishing job: its last events must not end this one
            studio.settings.set("train", "max_steps", 30)
            train.start()
            follow_up.append(train.active)

    studio.bridge.finished.connect(start_next)
    train.start()
    qtbot.waitUntil(lambda: bool(follow_up) and studio.bridge.current_job is not None
                    and studio.bridge.current_job.id == follow_up[0], timeout=5000)
    assert train.running and not train.resume_button.isVisible()
    qtbot.waitUntil(lambda: train.status.text().startswith("Run completed after 30 steps"), timeout=5000)
    qtbot.waitUntil(lambda: xs(train.plots.raw)[-1:] == [30], timeout=2000)
    assert len(xs(train.plots.raw)) == 30
    first, second = [c.run_dir for c in fake.sent if isinstance(c, P.StartRun)]
    assert first != second  # started within the same second: still two folders


def test_the_samples_page_shows_the_answers_of_every_evaluation(qtbot, panel, studio, fake):
    short_run(studio)
    train = panel(TrainPanel)
    train.pages.setCurrentWidget(train.samples_view)
    view = train.samples_view
    assert view.note.isVisible() and view.table.rowCount() == 0  # says what will appear, and when
    train.start()
    qtbot.waitUntil(lambda: train.status.text().startswith("Run completed"), timeout=5000)
    qtbot.waitUntil(lambda: view.step.count() == 3, timeout=2000)
    assert [view.step.itemText(i).split(":")[0] for i in range(3)] == ["step 0", "step 10", "step 20"]
    assert view.step.currentIndex() == 2 and not view.note.isVisible()
    headers = [view.table.horizontalHeaderItem(c).text() for c in range(view.table.columnCount())]
    assert headers == ["Prompt", "Reference", "Base model (step 0)", "At step 20"]
    assert view.table.rowCount() == 4
    latest = [view.table.item(r, 3).text() for r in range(4)]
    assert latest == [view.table.item(r, 1).text() for r in range(4)]  # the demo run learned them all
    view.step.setCurrentIndex(1)  # an older evaluation, one click away
    assert view.table.horizontalHeaderItem(3).text() == "At step 10"
    assert view.table.item(0, 3).text() != view.table.item(0, 1).text()
    train.pages.setCurrentWidget(train.plots)  # the score beside the held-out loss, on its own axis
    qtbot.waitUntil(lambda: xs(train.plots.f1) == [0, 10, 20], timeout=2000)
    assert train.plots.eval_plot.getAxis("right").isVisible()
