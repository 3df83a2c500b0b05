"""The GUI thread's share of a run's events: an event costs an append; plots are drawn
once per frame at most, and only when on screen. Counted in events and frames, never in
milliseconds: how late the event loop runs under a flood is measured by
benchmarks/gui_latency.py, on a machine that is named with the figures."""

from xgblora_app.panels.train_panel import TrainPanel
from xgblora_app.plots import REDRAW_MS, TrainingPlots
from xgblora_engine import protocol as P


def xs(curve):
    return [] if curve.xData is None else list(curve.xData)


def flood(steps, kappa=10):
    events = [P.RunStarted(run_dir="r", config={}, model_info={}, data_report="", n_layers=30, total_steps=steps,
                           total_rounds=steps // kappa)]
    for step in range(1, steps + 1):
        events.append(P.StepMetrics(step=step, round=(step - 1) // kappa + 1, loss=3.0 / step, lr=1e-3, grad_norm=1.0,
                                    layers=[1, 7], seconds=0.1, tokens=64, tokens_per_s=640.0))
        events.append(P.MemorySample(step=step, device="cpu", allocated=None, reserved=None, peak=None,
                                     rss=2**30 + step, predicted_peak=2**31))
        if step % kappa == 0:
            events.append(P.RoundMerged(round=step // kappa, step=step, layers=[1, 7], modules=14, booster_norm=0.1,
                                        merge_seconds=0.0, round_seconds=1.0))
    return events


def shown_plots(qtbot):
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.show()
    plots.timer.stop()  # frames are driven by hand below
    plots.refresh(force=True)
    return plots


def test_a_flood_of_events_costs_one_redraw_per_frame(qtbot):
    plots = shown_plots(qtbot)
    before = plots.redraws
    for event in flood(1000):
        plots.series.add(event)
    assert plots.redraws == before and len(plots.series.steps) == 0  # arriving draws nothing
    plots.refresh()  # one frame
    assert plots.redraws == before + 1 and len(xs(plots.raw)) == 1000 and len(xs(plots.rss_curve)) == 1000
    plots.refresh()  # a frame with nothing new draws nothing
    assert plots.redraws == before + 1


def test_plots_of_a_hidden_page_are_drawn_when_it_is_shown(qtbot):
    plots = shown_plots(qtbot)
    plots.hide()
    before = plots.redraws
    for event in flood(200):
        plots.series.add(event)
    plots.refresh()
    assert len(plots.series.steps) == 200 and plots.redraws == before  # taken in, not drawn
    plots.show()
    assert plots.redraws == before + 1 and len(xs(plots.raw)) == 200


def test_axes_move_seldom_the_step_axis_spans_the_whole_run(qtbot):
    plots = shown_plots(qtbot)
    events = flood(400)
    memory_ranges = []
    for chunk in (events[:300], events[300:]):
        plots.series.extend(chunk)
        plots.refresh()
        low, high = plots.loss_plot.viewRange()[0]
        assert low <= 0 and 400 <= high < 420  # the run's length, not the steps so far
        memory_ranges.append(plots.memory_plot.viewRange()[1])
    assert memory_ranges[0] == memory_ranges[1] and memory_ranges[0][1] >= 1.2 * 2**31  # room above the peak


def test_redraws_follow_the_20_hz_timer_not_the_events(qtbot, panel, studio, fake):
    studio.settings.update({"train": {"max_steps": 400, "eval_every": 100}, "boost": {"merge_every": 10}})
    fake.steps_per_poll = 20  # about 65 events per 30 ms poll
    train = panel(TrainPanel)
    ticks, events = [], []
    train.plots.timer.timeout.connect(lambda: ticks.append(1))
    studio.bridge.event.connect(lambda e: events.append(1))
    before = train.plots.redraws
    train.start()
    qtbot.waitUntil(lambda: train.status.text().startswith("Run completed"), timeout=60_000)
    drawn = train.plots.redraws - before
    assert train.plots.timer.interval() == REDRAW_MS == 50
    assert drawn <= len(ticks) + 1  # one a frame at most, plus the redraw Start forces
    assert len(events) > 800 and drawn < len(events) / 10


def test_steps_and_log_lines_wait_for_the_status_timer(qtbot, panel, studio, fake):
    studio.settings.update({"train": {"max_steps": 2000}, "boost": {"merge_every": 5}})
    fake.steps_per_poll = 5
    train = panel(TrainPanel)
    train.status_timer.stop()
    train.start()
    qtbot.waitUntil(lambda: len(train.recent) >= 20 and bool(train.log_lines), timeout=10_000)
    assert train.progress.value() <= 0 and train.log_view.toPlainText() == ""  # queued, not shown per event
    last = train.recent[-1].step
    train._show_latest()
    assert train.progress.value() >= last and not train.recent and "round" in train.log_view.toPlainText()
    train.stop()
