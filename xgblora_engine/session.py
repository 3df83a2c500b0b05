"""One training run from settings to ledger: load → prepare data → train → save.

Called in-process by tests and inside the worker process by the CLI and the app;
it reports only through ``emit`` (protocol events) and the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from xgblora_engine import protocol as P
from xgblora_engine.boosting.sampling import check_explicit, check_k, default_k
from xgblora_engine.boosting.trainer import BoostingTrainer, RunControl, TrainerState
from xgblora_engine.config import RunConfig, save_config
from xgblora_engine.rundir import RunDir

Emit = Callable[[object], None]


@dataclass
class Prepared:
    """A loaded model with its data and boosting targets, ready to train."""

    loaded: object  # models.loading.LoadedModel
    data: object  # data.dataset.PreparedData
    targets_by_layer: dict[int, list[str]]
    k: int


def prepare(cfg: RunConfig, emit: Emit) -> Prepared:
    from xgblora_engine.data.dataset import prepare_data
    from xgblora_engine.models.loading import load_model, load_tokenizer

    cfg.validate()
    # Data first (it needs only the tokenizer): a bad file is reported in seconds,
    # not after the model has loaded.
    emit(P.StateChanged(state="loading", detail=f"preparing data {cfg.data.path}"))
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg.data, tokenizer, cfg.train.seed)
    emit(P.LogLine(level="info", text=data.report.describe()))
    emit(P.StateChanged(state="loading", detail=f"loading model {cfg.model.name}"))
    loaded = load_model(cfg.model, tokenizer)
    emit(P.LogLine(level="info", text=f"model: {describe_model(loaded.info)}"))
    targets = targets_by_layer(loaded.model, cfg.model.target_modules)
    k = resolve_k(cfg, len(targets))
    if cfg.model.gradient_checkpointing:
        # Non-reentrant: keeps autograd's early stop at the lowest boosted layer.
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Prepared(loaded, data, targets, k)


def targets_by_layer(model, names: list[str] | None) -> dict[int, list[str]]:
    from xgblora_engine.models.targets import find_layers, find_targets

    _, layers = find_layers(model)
    return {i: sorted(find_targets(model, [i], names)) for i in range(len(layers))}


def resolve_k(cfg: RunConfig, n_layers: int) -> int:
    b = cfg.boost
    if b.layers is not None:
        return len(check_explicit(b.layers, n_layers))
    k = b.layers_per_round if b.layers_per_round is not None else default_k(n_layers)
    check_k(k, n_layers)
    return k


def describe_model(info) -> str:
    return (f"{info.architecture}, {info.n_layers} layers, hidden {info.hidden_size}, "
            f"{info.n_params / 1e6:.1f}M parameters, {info.dtype} on {info.device}"
            + (f", {info.quantization} base" if info.quantization not in (None, "none") else ""))


def run_training(cfg: RunConfig, out: str | None, emit: Emit, control: RunControl | None = None) -> RunDir:
    """Train a new run into ``out`` (or a fresh folder in the runs root)."""
    from xgblora_engine.data.dataset import BatchStream, eval_batches

    cfg.validate()
    run = RunDir.create(out, cfg.model.name)
    recorder = _recording(run, emit)
    recorder(P.StateChanged(state="loading", detail=str(run.path)))
    prepared = prepare(cfg, recorder)
    cfg.boost.layers_per_round = prepared.k  # the resolved value is what the run used
    save_config(cfg, run.config_path)
    info = prepared.loaded.info
    total_rounds = -(-cfg.train.max_steps // cfg.boost.merge_every)
    run.update_status(status="training", created=time.time(), model=cfg.model.name,
                      model_info=_as_dict(info), data=cfg.data.path, total_steps=cfg.train.max_steps,
                      step=0, total_rounds=total_rounds)
    recorder(P.RunStarted(run_dir=str(run.path), config=cfg.to_dict(), model_info=_as_dict(info),
                          data_report=prepared.data.report.describe(), n_layers=info.n_layers,
                          total_steps=cfg.train.max_steps, total_rounds=total_rounds))
    pad_id = prepared.loaded.tokenizer.pad_token_id
    stream = BatchStream(prepared.data.train, cfg.train.batch_size, cfg.train.seed, pad_id)
    trainer = BoostingTrainer(
        prepared.loaded.model, prepared.targets_by_layer, stream,
        lambda: eval_batches(prepared.data.eval, cfg.train.batch_size, pad_id),
        cfg, prepared.k, recorder, control)
    recorder(P.StateChanged(state="training"))
    state = _fit(trainer, run, recorder)
    status = "stopped" if trainer.stopped else "completed"
    run.update_status(status=status, step=state.step, final_loss=state.last_loss,
                      final_eval_loss=state.last_eval_loss)
    recorder(P.Finished(status=status, run_dir=str(run.path), steps=state.step,
                        final_loss=state.last_loss, final_eval_loss=state.last_eval_loss))
    return run


def _fit(trainer: BoostingTrainer, run: RunDir, emit: Emit) -> TrainerState:
    try:
        return trainer.fit()
    except BaseException:
        run.update_status(status="failed", step=trainer.state.step)
        raise
    finally:
        trainer.state.ledger.save(run.ledger_path)


def _recording(run: RunDir, emit: Emit) -> Emit:
    def record(event) -> None:
        run.record_event(P.to_dict(event))
        emit(event)

    return record


def _as_dict(info) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(info) if is_dataclass(info) else dict(info)
