"""A training run from settings to ledger: prepare → preflight → train → save.

Runs inside the worker process (for the CLI and the app alike) and in-process in tests.
It reports only through ``emit`` (protocol events) and the run directory.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from xgblora_engine import memory
from xgblora_engine import protocol as P
from xgblora_engine.boosting.sampling import checked_k
from xgblora_engine.boosting.trainer import BoostingTrainer, TrainerState
from xgblora_engine.checkpoint import latest_valid, restore_rng, save_checkpoint
from xgblora_engine.config import RunConfig, load_config_file, save_config
from xgblora_engine.control import RunControl
from xgblora_engine.diskspace import (
    MIN_HEADROOM,
    reported_as_disk_full,
    resume_hint,
    run_space_needed,
)
from xgblora_engine.distributed import RankSlice, SingleProcess
from xgblora_engine.errors import Stopped, UserError
from xgblora_engine.fileio import atomic_write_text
from xgblora_engine.models.shape import shape_of, shares_of
from xgblora_engine.models.sharding import check_not_data_parallel
from xgblora_engine.preflight import preflight_result
from xgblora_engine.reporting import TensorBoardReport, check_available
from xgblora_engine.rundir import RunDir

Emit = Callable[[object], None]


@dataclass
class Prepared:
    """A loaded model with its data and boosting targets, ready to train."""

    loaded: object  # models.loading.LoadedModel
    data: object  # data.dataset.PreparedData
    targets_by_layer: dict[int, list[str]]
    k: int

    @property
    def pad_id(self) -> int:
        return self.loaded.tokenizer.pad_token_id


def prepare(cfg: RunConfig, emit: Emit, should_stop: Callable[[], bool] = lambda: False) -> Prepared:
    from xgblora_engine.data.dataset import prepare_data
    from xgblora_engine.models.loading import dequantizes_gguf, load_model, load_tokenizer

    cfg.validate()
    download_if_needed(cfg.model.name, emit, should_stop)
    # Data first (it needs only the tokenizer): a bad file is reported in seconds,
    # not after the model has loaded.
    emit(P.StateChanged(state="loading", detail=f"preparing data {cfg.data.path}"))
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg.data, tokenizer, cfg.train.seed)
    emit(P.LogLine(level="info", text=data.report.describe()))
    if data.report.dropped:
        share = data.report.dropped / max(1, data.report.n_train + data.report.dropped)
        emit(P.Warning(message=f"{data.report.dropped} training examples ({share:.0%}) were dropped: their response "
                               f"alone is longer than {cfg.data.seq_len} tokens",
                       hint=f"raise --seq-len above {cfg.data.seq_len} to train on them"))
    emit(P.StateChanged(state="loading", detail=f"loading model {cfg.model.name}"))
    if dequantizes_gguf(cfg.model):
        emit(P.LogLine(level="info", text="first load of this .gguf: dequantizing its weights can take a minute "
                                          "or more; the result is kept, so later loads take seconds"))
    loaded = load_model(cfg.model, tokenizer, run=cfg)
    emit(P.LogLine(level="info", text=f"model: {describe_model(loaded.info)}"))
    targets = targets_by_layer(loaded.model, cfg.model.target_modules)
    k = checked_k(cfg.boost.layers, cfg.boost.layers_per_round, len(targets))
    cfg.boost.layers_per_round = k  # the resolved value is what the run uses
    if cfg.model.gradient_checkpointing:
        # Non-reentrant: keeps autograd's early stop at the lowest boosted layer.
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Prepared(loaded, data, targets, k)


def download_if_needed(name: str, emit: Emit, should_stop: Callable[[], bool]) -> None:
    """An uncached Hub model is fetched first, with progress; anything else loads as it is."""
    from xgblora_engine.models.download import ensure_downloaded
    from xgblora_engine.models.source import resolve_source

    source = resolve_source(name)
    if source.kind != "hub":
        return
    emit(P.StateChanged(state="loading", detail=f"checking {name} in the Hugging Face cache"))
    ensure_downloaded(source.path, lambda done, total, rate: emit(
        P.DownloadProgress(repo_id=source.path, done_bytes=done, total_bytes=total, bytes_per_s=rate)), should_stop)


def targets_by_layer(model, names: list[str] | None) -> dict[int, list[str]]:
    from xgblora_engine.models.targets import find_layers, find_targets

    _, layers = find_layers(model)
    return {i: sorted(find_targets(model, [i], names)) for i in range(len(layers))}


def describe_model(info) -> str:
    where = info.device if len(info.devices) < 2 else " + ".join(info.devices) + " (sharded)"
    return (f"{info.architecture}, {info.n_layers} layers, hidden {info.hidden_size}, "
            f"{info.n_params / 1e6:.1f}M parameters, {info.dtype} on {where}"
            + (f", {info.quantization} base" if info.quantization not in (None, "none") else ""))


# --- preflight ---------------------------------------------------------------------
def preflight(prepared: Prepared, cfg: RunConfig, limit: int | None, trial: bool) -> P.PreflightResult:
    """Analytic estimate, optionally a measured trial, and a verdict with remedies, for
    every device holding weights (one, or each GPU of a sharded model); the tightest
    device gives the verdict and the headline figures."""
    info, model = prepared.loaded.info, prepared.loaded.model
    shape = shape_of(model)
    longest = _longest_batch(prepared, cfg)
    labelled = int((longest["labels"][:, 1:] != -100).sum())
    shares = shares_of(model)
    measured = measure_peaks(prepared, cfg, longest) if trial else None
    return preflight_result(shape, cfg, shares, info.dtype, lambda d: memory.available(d, limit), labelled,
                            int(longest["input_ids"].numel()), measured)


def _longest_batch(prepared: Prepared, cfg: RunConfig):
    from xgblora_engine.data.dataset import BatchStream

    return BatchStream(prepared.data.train, cfg.train.batch_size, cfg.train.seed, prepared.pad_id).longest_batch()


def measure_trial(prepared: Prepared, cfg: RunConfig, batch, steps: int = 2) -> int:
    """The highest device peak of ``measure_peaks`` (the only one, unsharded)."""
    return max(measure_peaks(prepared, cfg, batch, steps).values())


def measure_peaks(prepared: Prepared, cfg: RunConfig, batch, steps: int = 2) -> dict[str, int]:
    """Peak memory of real optimizer steps on the longest batch with boosters on the
    lowest k layers (backward then reaches every layer: the worst round), per device:
    each GPU's allocator peak, or the process RSS on the CPU."""
    import torch

    from xgblora_engine.boosting.booster import attach_boosters, booster_parameters, detach_boosters
    from xgblora_engine.boosting.loss import batch_to, input_device, summed_loss

    model = prepared.loaded.model
    gpus = [d for d in (prepared.loaded.info.devices or [prepared.loaded.info.device]) if d.startswith("cuda")]
    names = [n for layer in range(prepared.k) for n in prepared.targets_by_layer[layer]]
    boosters = attach_boosters(model, names, cfg.boost.rank, cfg.boost.scaling, cfg.boost.dropout, cfg.train.seed, 0)
    optimizer = torch.optim.AdamW(booster_parameters(boosters), lr=0.0)
    batch = batch_to(batch, input_device(model))
    model.train()
    try:
        for gpu in gpus:
            torch.cuda.reset_peak_memory_stats(gpu)
        with memory.PeakRSS() as rss:
            for _ in range(steps):
                summed_loss(model, batch).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return {gpu: torch.cuda.max_memory_reserved(gpu) for gpu in gpus} if gpus else {"cpu": rss.peak}
    finally:
        detach_boosters(model, boosters)
        model.eval()


# --- training ----------------------------------------------------------------------
@dataclass
class Options:
    """How a run is driven (not what it learns: that is the RunConfig)."""

    force: bool = False  # start even when the preflight says it will not fit
    stop_after: int | None = None
    memory_limit: int | None = None
    keep_checkpoints: int = 3
    dist: object = field(default_factory=SingleProcess)  # the data-parallel process group, if any


def run_training(cfg: RunConfig, out: str | None, emit: Emit, control: RunControl | None = None,
                 options: Options | None = None) -> RunDir:
    """Train a new run into ``out`` (or a fresh folder in the runs root)."""
    cfg.validate()
    options = options or Options()
    check_not_data_parallel(cfg.model.shard_gpus, options.dist.world)
    check_available(cfg.train.report_to)
    main = options.dist.is_main
    run = RunDir.create(out, cfg.model.name) if main else None
    run = RunDir(options.dist.broadcast(str(run.path) if main else None))  # every rank, one folder
    record = _recording(run, emit) if main else _silent
    if main:
        # Settings first: a run killed at any later moment can be resumed from them.
        with reported_as_disk_full(run.path, lambda: MIN_HEADROOM, "run the same command again"):
            save_config(cfg, run.config_path)
    with reported_as_disk_full(run.path, lambda: run_space_needed(run.path), resume_hint(run.path)):
        if main:
            run.update_status(status="preparing", created=time.time(), model=cfg.model.name, data=cfg.data.path)
        try:
            prepared = prepare(cfg, record, stop_asked(control))
        except BaseException as exc:
            if main:
                _mark_failed(run, exc)
            raise
        if main:
            save_config(cfg, run.config_path)  # again, with the resolved layers per round
        return _train(run, cfg, prepared, record, control, options, TrainerState(), None)


def resume_training(run_dir: str, emit: Emit, control: RunControl | None = None,
                    options: Options | None = None) -> RunDir:
    """Continue a stopped, crashed or killed run from its newest intact checkpoint."""
    options = options or Options()
    run = RunDir.open(run_dir)
    cfg = RunConfig.from_saved(load_config_file(run.config_path)).validate()
    check_not_data_parallel(cfg.model.shard_gpus, options.dist.world)
    check_available(cfg.train.report_to)
    with reported_as_disk_full(run.path, lambda: run_space_needed(run.path), resume_hint(run.path)):
        return _resume(run, cfg, emit, control, options)


def _resume(run: RunDir, cfg: RunConfig, emit: Emit, control: RunControl | None, options: Options) -> RunDir:
    record = _recording(run, emit) if options.dist.is_main else _silent
    if options.dist.is_main:
        run.update_status(status="preparing", model=cfg.model.name, data=cfg.data.path)
    checkpoint, skipped = latest_valid(run.checkpoints_path)
    for note in skipped:
        record(P.Warning(message=f"skipped a damaged checkpoint: {note}", hint="an earlier one is used instead"))
    if checkpoint is None and skipped:
        raise UserError(f"no intact checkpoint in {run.checkpoints_path}",
                        f"start it again in a new folder with its settings: "
                        f"`xgblora train --config {run.config_path} --out NEW_FOLDER`")
    prepared = prepare(cfg, record, stop_asked(control))
    state = TrainerState()
    if checkpoint is not None:
        state = TrainerState(step=checkpoint.step, ledger=checkpoint.ledger, last_loss=checkpoint.last_loss,
                             last_eval_loss=checkpoint.last_eval_loss, carried=checkpoint.carried,
                             live=checkpoint.live, live_round=checkpoint.live_round,
                             live_lr_factor=checkpoint.live_lr_factor)
        record(P.LogLine(level="info", text=f"resuming from {checkpoint.path.name} (step {checkpoint.step})"))
    if options.dist.is_main:
        _truncate_metrics(run, state.step)
    return _train(run, cfg, prepared, record, control, options, state, checkpoint)


def _train(run: RunDir, cfg: RunConfig, prepared: Prepared, record: Emit, control: RunControl | None,
           options: Options, state: TrainerState, checkpoint) -> RunDir:
    from xgblora_engine.data.dataset import BatchStream, eval_batches

    info, dist, main = prepared.loaded.info, options.dist, options.dist.is_main
    record(P.StateChanged(state="preflight"))
    check = preflight(prepared, cfg, options.memory_limit, trial=False)
    record(check)
    if dist.any(check.verdict == "wont_fit") and not options.force:
        raise UserError(check.message + "; training was not started",
                        "; ".join(r.label for r in check.remedies[:3]) + " (or start anyway with --force)")
    total_rounds = -(-cfg.train.max_steps // cfg.boost.merge_every)
    if main:
        run.update_status(status="training", model_info=msgspec.to_builtins(info), total_steps=cfg.train.max_steps,
                          total_rounds=total_rounds, step=state.step, predicted_peak=check.predicted_peak,
                          processes=dist.world)
    record(P.RunStarted(run_dir=str(run.path), config=copy.deepcopy(cfg), model_info=info,
                        data_report=prepared.data.report.describe(), n_layers=info.n_layers,
                        total_steps=cfg.train.max_steps, total_rounds=total_rounds, start_step=state.step))
    report = TensorBoardReport(run.path) if main and cfg.train.report_to == "tensorboard" else None
    if report is not None:
        record = _mirrored(record, report)
    if main:
        record = _with_memory_samples(record, info.device, check.predicted_peak)
    # One stream of global batches (per-process batch × processes), each rank taking its
    # slice: the data order is that of a single process with the whole batch.
    stream = BatchStream(prepared.data.train, cfg.train.batch_size * dist.world, cfg.train.seed, prepared.pad_id)
    if checkpoint is not None:
        stream.load_state(checkpoint.stream_state)
        restore_rng(checkpoint)
    trainer = BoostingTrainer(
        prepared.loaded.model, prepared.targets_by_layer, RankSlice(stream, dist.rank, dist.world),
        lambda: eval_batches(prepared.data.eval, cfg.train.batch_size, prepared.pad_id),
        cfg, prepared.k, record, _with_step_limit(control, options.stop_after), state, dist=dist)

    def checkpoint_round(round_index: int) -> None:
        """At a merge, or at a Stop inside the round (then with the round in progress)."""
        if not main:  # only rank 0 writes run files
            return
        st = trainer.state
        path = save_checkpoint(run.checkpoints_path, st.step, round_index, st.ledger, stream.state(), st.last_loss,
                               st.last_eval_loss, options.keep_checkpoints, st.carried,
                               st.live if st.live_round == round_index else None, st.live_lr_factor)
        trainer.state.ledger.save(run.ledger_path)
        run.update_status(step=trainer.state.step)
        record(P.CheckpointSaved(step=trainer.state.step, round=round_index, path=str(path)))

    trainer.on_round_end = trainer.on_stop_in_round = checkpoint_round
    if main:
        trainer.on_evaluate = _sample_answers(prepared, cfg, record)
    record(P.StateChanged(state="training"))
    try:
        trainer.fit()
    except BaseException as exc:
        if main:
            _mark_failed(run, exc, step=trainer.state.step)
        raise
    finally:
        if report is not None:  # nothing after training is drawn in TensorBoard
            report.close()
    status = "stopped" if trainer.stopped else "completed"
    if main:
        trainer.state.ledger.save(run.ledger_path)
        run.update_status(status=status, step=trainer.state.step, final_loss=trainer.state.last_loss,
                          final_eval_loss=trainer.state.last_eval_loss)
    record(P.Finished(status=status, run_dir=str(run.path), steps=trainer.state.step,
                      final_loss=trainer.state.last_loss, final_eval_loss=trainer.state.last_eval_loss,
                      message=stopped_in_round_message(trainer.state)))
    return run


def _sample_answers(prepared: Prepared, cfg: RunConfig, record: Emit):
    """At every evaluation, the model's answers to the same few held-out prompts."""
    import torch

    from xgblora_engine.models.loading import is_out_of_memory
    from xgblora_engine.samples import answer, sample_prompts
    from xgblora_engine.scoring import mean_scores

    prompts = sample_prompts(prepared.data.eval, prepared.loaded.tokenizer, cfg.train.samples)
    if cfg.train.samples and not prompts:
        record(P.LogLine(level="info", text="no sample answers: no held-out example has a prompt before its "
                                            "response (plain text, or no held-out data)"))

    def on_evaluate(step: int, round_index: int) -> None:
        if not prompts:
            return
        try:
            answers, seconds = answer(prepared.loaded.model, prepared.loaded.tokenizer, prompts,
                                      cfg.train.sample_tokens)
        except Exception as exc:  # noqa: BLE001 - watching must never end the run it watches
            if not is_out_of_memory(exc):
                raise
            prompts.clear()  # no further attempts: each would run out of memory again
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # what generating held goes back before the next step
            record(P.Warning(message=f"sample answers stopped at step {step}: out of memory while generating",
                             hint="training goes on; lower --samples or --sample-tokens next time"))
            return
        record(P.SampleAnswers(step=step, round=round_index, answers=answers, seconds=seconds,
                               **mean_scores(answers)))
    return on_evaluate


def stopped_in_round_message(state: TrainerState) -> str:
    """What a Stop inside a round kept, so the user knows a resume retrains nothing."""
    if not state.live_round:
        return ""
    return (f"Round {state.live_round} was in progress: its boosters and optimizer state were saved with the "
            f"checkpoint at step {state.step}, and a resume continues it from there.")


class _StepLimit(RunControl):
    """Stops like the Stop command once ``limit`` steps are done (scripts and tests)."""

    def __init__(self, inner: RunControl | None, limit: int) -> None:
        self.inner, self.limit = inner or RunControl(), limit

    def should_stop(self, step: int) -> bool:
        return step >= self.limit or self.inner.should_stop(step)

    def wait_if_paused(self) -> None:
        self.inner.wait_if_paused()


def stop_asked(control: RunControl | None) -> Callable[[], bool]:
    """Whether a Stop has come, asked before training starts (a download, say)."""
    return lambda: control is not None and control.should_stop(0)


def _with_step_limit(control: RunControl | None, stop_after: int | None) -> RunControl | None:
    return _StepLimit(control, stop_after) if stop_after else control


def _truncate_metrics(run: RunDir, step: int) -> None:
    """Drop metric lines past the checkpoint: those steps are trained again."""
    import json

    kept = [m for m in run.metrics() if m.get("step", 0) <= step]
    atomic_write_text(run.metrics_path, "".join(json.dumps(m) + "\n" for m in kept))
    if run.samples_path.exists():
        kept = [s for s in run.samples() if s["step"] <= step]
        atomic_write_text(run.samples_path, "".join(json.dumps(s) + "\n" for s in kept))


def _mark_failed(run: RunDir, exc: BaseException, **fields) -> None:
    """Best effort: the status must not hide the error that ended the run (a full disk
    fails this write too; run.json is then left as it was). A Stop is no failure."""
    try:
        run.update_status(status="stopped" if isinstance(exc, Stopped) else "failed", message=str(exc), **fields)
    except OSError:
        pass


def _silent(event) -> None:
    """Ranks other than 0 report nothing."""


def _with_memory_samples(record: Emit, device: str, predicted_peak: int) -> Emit:
    """A memory reading after every step, recorded like every other event, with the
    preflight's prediction beside it."""
    def with_memory(event) -> None:
        record(event)
        if isinstance(event, P.StepMetrics):
            record(P.MemorySample(step=event.step, predicted_peak=predicted_peak, **memory.snapshot(device)))

    return with_memory


def _mirrored(record: Emit, report: Emit) -> Emit:
    def both(event) -> None:
        record(event)
        report(event)

    return both


def _recording(run: RunDir, emit: Emit) -> Emit:
    def record(event) -> None:
        run.record_event(P.to_dict(event))
        emit(event)

    return record

