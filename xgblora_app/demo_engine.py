"""The demo engine: an in-process stand-in for the engine worker that loads no model.

Used by ``xgblora-studio --demo``, the GUI tests and, for what this machine cannot show
(several GPUs), the screenshot script. It keeps the real client's contract (see
``engine_client``): a ``Hello`` first, one job at a time ending in
``StateChanged("idle")``, every event stamped with its command's ``job_id``,
Pause/Resume/Stop acting between steps, and a single ``WorkerExited`` when it "dies".
A training job advances ``steps_per_poll`` optimizer steps per ``poll()``, so a test sees
plots fill over several timer ticks.

What it cannot compute without a model it scripts (losses, timings, token counts from
characters); the rest it takes from the engine's own torch-free modules, so it cannot
drift from the real engine: the learning-rate schedule, the layer draws and the k rule,
the memory estimate of the embedded model's shape, the verdict, the remedies and the
preflight message. tests/test_engine_contract.py checks that both engines answer the
same commands with the same event types and fields.

With ``runs_root`` set, runs are written as real run folders (config.yaml, run.json,
events.jsonl), so the Runs, Export and Try-it panels can be exercised end to end. With
``gpus=N`` its Hello lists N made-up GPUs beside the CPU, as a multi-GPU machine's would.
"""

from __future__ import annotations

import copy
import math
import random
import shlex
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import msgspec

from xgblora_engine import memory
from xgblora_engine import protocol as P
from xgblora_engine.boosting.sampling import check_k, default_k, sample_layers
from xgblora_engine.boosting.schedule import run_schedule
from xgblora_engine.config import RunConfig, load_config_file, save_config
from xgblora_engine.errors import UserError
from xgblora_engine.payloads import DataReport, Device, ExportCheck, ModelInfo, PreviewExample
from xgblora_engine.preflight import preflight_result
from xgblora_engine.rundir import EXPORT_RECORD, RunDir, next_export_folder, ollama_name
from xgblora_engine.scoring import mean_scores, scored

MB = 2**20
# The embedded SmolLM2-135M-Instruct as the real engine loads it (fp32, on the CPU).
SMOLLM2_INFO = ModelInfo(
    name="default", architecture="llama", n_layers=30, hidden_size=576, vocab_size=49152, n_params=134_515_008,
    dtype="fp32", device="cpu", quantization="none", weight_bytes=538_060_032, layers_path="model.layers",
    targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], devices=["cpu"])
# Its shape as memory.shape_of reads it: what the analytic estimate needs.
SMOLLM2_SHAPE = memory.Shape(n_params=134_515_008, n_layers=30, hidden=576, intermediate=1536, vocab=49152,
                             linear_params_per_layer=3_538_944, linear_dims_per_layer=10_176)
DEMO_CPU = Device(device="cpu", name="x86_64", total_bytes=16 * 2**30, free_bytes=9 * 2**30)
EXPORT_STAGES = (("loading base", 0.1), ("merging ledger", 0.35), ("writing", 0.6), ("verifying", 0.9))

Chunk = list  # the events of one optimizer step (or one scripted moment)


class DemoEngine:
    def __init__(self, *, model_info: ModelInfo | None = None, runs_root: str | Path | None = None,
                 steps_per_poll: int | None = 5, available: int = 4096 * MB, die_at_step: int | None = None,
                 failing_formats: tuple[str, ...] = (), nan_round: int | None = None,
                 recorded_run: list[P.Event] | None = None, gpus: int = 0) -> None:
        self.model_info = model_info or SMOLLM2_INFO
        self.devices = [DEMO_CPU] + demo_gpus(gpus)  # what the Hello reports
        self.runs_root = Path(runs_root) if runs_root else None
        self.steps_per_poll = steps_per_poll  # None: a job runs to its end in one poll
        self.available = available
        self.die_at_step = die_at_step
        self.failing_formats = set(failing_formats)
        self.nan_round = nan_round
        self.recorded_run = recorded_run
        self.sent: list[P.Command] = []
        self.starts = 0
        self._alive = False
        self._out: deque = deque()
        self._job: Iterator[Chunk] | None = None
        self._paused = False
        self._stop = False
        self._exit: P.WorkerExited | None = None
        self._job_id = 0  # the job being run: its events carry this id

    # --- the EngineClient contract ------------------------------------------------
    def start(self) -> None:
        self.starts += 1
        self._alive, self._exit, self._job, self._paused, self._stop = True, None, None, False, False
        self._out.append(P.Hello(version=P.PROTOCOL_VERSION, pid=1000 + self.starts, devices=self.devices))

    def is_alive(self) -> bool:
        return self._alive

    def send(self, command: P.Command) -> None:
        command = P.decode_command(P.encode(command))  # through the boundary, as to a real worker
        self.sent.append(command)
        if not self._alive:
            return  # like a queue whose reader is gone: the command is simply lost
        if isinstance(command, P.Pause):
            self._paused = True
            self._emit(P.StateChanged(state="paused", detail="paused after the current optimizer step"))
        elif isinstance(command, P.Resume):
            self._paused = False
            self._emit(P.StateChanged(state="training"))
        elif isinstance(command, P.Stop):
            self._stop, self._paused = True, False
            self._emit(P.StateChanged(state="stopping", detail="stopping after the current optimizer step"))
        elif isinstance(command, P.Shutdown):
            self._alive, self._job = False, None
        elif self._job is not None:
            self._emit(P.Error(message=f"the engine is busy; {type(command).__name__} was not run",
                               hint="wait until the current job finishes or stop it", kind="user", job_id=command.id))
        else:
            self._stop, self._paused, self._job_id = False, False, command.id
            self._job = self._guarded(command)

    def poll(self, max_events: int = 500) -> list[P.Event]:
        self._advance()
        events = []
        while self._out and len(events) < max_events:
            events.append(self._out.popleft())
        if not events and self._exit is not None:
            events.append(self._exit)
            self._exit = None
        return events

    def close(self, timeout: float = 5.0) -> None:
        self._alive, self._job = False, None

    def _emit(self, event: P.Event) -> None:
        """Queue an event, stamped with the job that caused it unless it names one."""
        if not event.job_id:
            event.job_id = self._job_id
        self._out.append(P.decode_event(P.encode(event)))

    # --- test helpers -----------------------------------------------------------
    def die(self, exitcode: int = -9, signal: str | None = "SIGKILL", message: str | None = None) -> None:
        """The worker process vanishes, as after an OOM kill."""
        self._alive, self._job = False, None
        self._exit = P.WorkerExited(exitcode=exitcode, signal=signal, message=message or (
            f"the engine process was killed by {signal} — most likely the system ran out of memory "
            "and killed it; the last checkpoint is intact, resume the run"))

    def kill(self) -> None:
        """As ``WorkerClient.kill``: the process gets SIGKILL."""
        self.die()

    def sent_types(self) -> list[str]:
        return [type(c).__name__ for c in self.sent]

    # --- job driving ----------------------------------------------------------------
    def _advance(self) -> None:
        budget = self.steps_per_poll if self.steps_per_poll is not None else math.inf
        while self._job is not None and budget > 0 and not self._paused:
            try:
                chunk = next(self._job)
            except StopIteration:
                self._job = None
                if self._alive:  # a worker that died says nothing more
                    self._emit(P.StateChanged(state="idle"))
                self._job_id = 0
                break
            for event in chunk:
                self._emit(event)
            budget -= 1

    def _guarded(self, cmd: P.Command) -> Iterator[Chunk]:
        """Runs a script; a UserError becomes an Error event, as in the real worker."""
        script = getattr(self, f"_script_{type(cmd).__name__}")
        try:
            yield from script(cmd)
        except UserError as exc:
            yield [P.Error(message=exc.message, hint=exc.hint, kind="user")]

    # --- scripts ----------------------------------------------------------------------
    def _script_StartRun(self, cmd: P.StartRun) -> Iterator[Chunk]:
        cfg = copy.deepcopy(cmd.config).validate()
        run = self._new_run_dir(cmd.run_dir, cfg)
        yield from self._train(cfg, run, start_step=0, cmd=cmd)

    def _script_ResumeRun(self, cmd: P.ResumeRun) -> Iterator[Chunk]:
        run = RunDir.open(cmd.run_dir)
        cfg = RunConfig.from_dict(load_config_file(run.config_path)).validate()
        start = int(run.status().get("step", 0))
        yield [P.LogLine(level="info", text=f"resuming from step {start}")]
        yield from self._train(cfg, run, start_step=start, cmd=cmd)

    def _train(self, cfg: RunConfig, run: RunDir | None, start_step: int, cmd) -> Iterator[Chunk]:
        record = _Recorder(run)
        if self.recorded_run is not None:
            yield from record.chunks(_chunks_of(self.recorded_run))
            return
        n_layers = self.model_info.n_layers
        k = self._k(cfg)
        schedule = run_schedule(cfg, k, n_layers)
        kappa, total, rounds = cfg.boost.merge_every, schedule.total_steps, schedule.total_rounds
        yield record([P.StateChanged(state="loading", detail=f"loading model {cfg.model.name}"),
                      P.LogLine(level="info", text="data: sample: alpaca format; 1000 rows")])
        check = self._preflight(cfg, k)
        predicted = check.predicted_peak
        yield record([P.StateChanged(state="preflight"), check])
        if check.verdict == "wont_fit" and not cmd.force:
            raise UserError(check.message + "; training was not started",
                            "; ".join(r.label for r in check.remedies[:3]) + " (or start anyway with --force)")
        yield record([P.RunStarted(run_dir=str(run.path) if run else "", config=cfg, model_info=self.model_info,
                                   data_report="data: sample (demo)", n_layers=n_layers, total_steps=total,
                                   total_rounds=rounds, start_step=start_step),
                      P.StateChanged(state="training")])
        if run:
            run.update_status(status="training", model_info=msgspec.to_builtins(self.model_info), total_steps=total,
                              total_rounds=rounds, step=start_step, predicted_peak=predicted)
        rng = random.Random(cfg.train.seed)
        loss = eval_loss = None
        done = start_step
        if start_step == 0:  # the base model's held-out loss, as the trainer measures it first
            eval_loss = _loss_curve(1, 1, kappa, rng) + 0.6
            yield record([P.EvalResult(step=0, round=0, eval_loss=eval_loss, n_tokens=2048),
                          *_sample_answers(cfg, 0, 0, total)])
        for step in range(start_step + 1, total + 1):
            if self._stop or (cmd.stop_after and step > cmd.stop_after):
                break
            if self.die_at_step is not None and step >= self.die_at_step:
                self.die()
                return
            rnd = schedule.round_of(step - 1)
            layers = sample_layers(n_layers, k, cfg.train.seed, rnd, cfg.boost.sampling, cfg.boost.layers)
            loss = _loss_curve(step, rnd, kappa, rng)
            chunk = [P.StepMetrics(step=step, round=rnd, loss=loss, lr=schedule.lr(step - 1), grad_norm=0.5 + rng.random(),
                                   layers=layers, seconds=0.8, tokens=cfg.train.batch_size * 100,
                                   tokens_per_s=500 + 60 * rng.random() + 4 * (sum(layers) / k)),
                     P.MemorySample(step=step, device="cpu", allocated=None, reserved=None, peak=None,
                                    rss=int(predicted * (0.82 + 0.06 * rng.random())), predicted_peak=predicted)]
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total:
                eval_loss = loss + 0.08 + 0.02 * rng.random()
                chunk += [P.EvalResult(step=step, round=rnd, eval_loss=eval_loss, n_tokens=2048),
                          *_sample_answers(cfg, step, rnd, total)]
            if step % kappa == 0 or step == total:
                if rnd == self.nan_round:
                    chunk += [P.RoundRolledBack(round=rnd, step=step, reason="loss became nan", retry_lr_factor=0.5),
                              P.Warning(message=f"round {rnd} produced a NaN loss and was rolled back",
                                        hint="it is retried at half the learning rate")]
                chunk += [P.RoundMerged(round=rnd, step=step, layers=layers, modules=7 * k, booster_norm=0.02 + 0.01 * rng.random(),
                                        merge_seconds=0.05, round_seconds=0.8 * kappa,
                                        update_multiple=0.8 + 0.8 * rng.random() if cfg.boost.line_search else 1.0),
                          P.CheckpointSaved(step=step, round=rnd, path=str(run.checkpoints_path / f"step-{step}") if run else "")]
                if run:
                    run.update_status(step=step)
            yield record(chunk)
            done = step
        status = "stopped" if done < total else "completed"
        if status == "completed":
            eval_loss = loss + 0.08 + 0.02 * rng.random()
            yield record([P.EvalResult(step=done, round=0, eval_loss=eval_loss, n_tokens=2048),
                          *_sample_answers(cfg, done, 0, total)])
        if run:
            run.update_status(status=status, step=done, final_loss=loss, final_eval_loss=eval_loss)
        yield record([P.Finished(status=status, run_dir=str(run.path) if run else None, steps=done,
                                 final_loss=loss, final_eval_loss=eval_loss)])

    def _script_Estimate(self, cmd: P.Estimate) -> Iterator[Chunk]:
        cfg = copy.deepcopy(cmd.config).validate()
        yield [P.StateChanged(state="preflight")]
        yield [self._preflight(cfg, self._k(cfg), cmd.memory_limit_bytes, cmd.trial)]

    def _script_Export(self, cmd: P.Export) -> Iterator[Chunk]:
        run = RunDir.open(cmd.run_dir)
        out = Path(cmd.out) if cmd.out else next_export_folder(cmd.into or run.exports_path, cmd.formats,
                                                               cmd.quant or "f16")
        name = ollama_name(cmd.ollama_name or run.path.name)
        yield [P.StateChanged(state="exporting")]
        for fmt in cmd.formats:
            target = out / fmt if len(cmd.formats) > 1 else out
            for stage, fraction in EXPORT_STAGES:
                yield [P.ExportProgress(format=fmt, stage=stage, fraction=fraction)]
            ok = fmt not in self.failing_formats
            target.mkdir(parents=True, exist_ok=True)
            checks = [ExportCheck("reloads", True, "loaded back in its runtime"),
                      ExportCheck("same logits", ok, "max |Δ| 2e-6" if ok else "max |Δ| 0.41")]
            message = f"{fmt} export verified" if ok else f"{fmt} export failed verification: logits differ"
            command = f"ollama create {name} -f {shlex.quote(str(target / 'Modelfile'))}" if fmt == "ollama" and ok else ""
            done = P.ExportDone(format=fmt, path=str(target), ok=ok, checks=checks, message=message, command=command)
            (target / EXPORT_RECORD).write_bytes(msgspec.json.encode(done))
            yield [done]
        if cmd.push_to:  # scripted: the demo engine uploads nothing
            url = f"https://huggingface.co/{cmd.push_to}"
            yield [P.ExportProgress(format="hub", stage="pushing", fraction=0.5),
                   P.ExportDone(format="hub", path=url, ok=True, checks=[ExportCheck("uploaded", True, str(out))],
                                message=f"pushed to {url} ({'public' if cmd.public else 'private'}; demo: nothing "
                                        "was uploaded)", command=f"hf download {cmd.push_to}")]

    def _script_Generate(self, cmd: P.Generate) -> Iterator[Chunk]:
        """A scripted answer, streamed a word per chunk; a Stop ends it between words."""
        yield [P.StateChanged(state="generating")]
        tuned = cmd.run_dir is not None
        turn = len(cmd.history) // 2 + 1
        text = (f"(fine-tuned, turn {turn}) {cmd.prompt.rstrip('?.')} is explained briefly in the documentation."
                if tuned else "I'm sorry, I am not sure. Could you give me more details about what you mean?")
        words, shown = text.split(" "), []
        for word in words:
            if self._stop:
                break
            shown.append(word)
            yield [P.GenerationChunk(text=word if len(shown) == 1 else " " + word)]
        whole = len(shown) == len(words)
        yield [P.GenerationResult(model=cmd.model, prompt=cmd.prompt, text=" ".join(shown), tokens=len(shown),
                                  seconds=1.2 if tuned else 1.1, stopped=whole, first_token_s=0.2,
                                  interrupted=not whole)]

    def _script_Inspect(self, cmd: P.Inspect) -> Iterator[Chunk]:
        model_info = data_report = None
        if cmd.model:
            if cmd.model.startswith("missing/"):
                raise UserError(f"model {cmd.model} is not in the Hugging Face cache and the network is off",
                                "download it once with network access, or pick a local folder")
            model_info = msgspec.structs.replace(self.model_info, name=cmd.model)
        if cmd.data:
            cfg = copy.deepcopy(cmd.config) if cmd.config else RunConfig()
            cfg.data.path = cmd.data
            data_report = demo_data_report(cfg.validate())
        yield [P.InspectResult(model_info=model_info, data_report=data_report)]

    # --- pieces ---------------------------------------------------------------------
    def _new_run_dir(self, path: str | None, cfg: RunConfig) -> RunDir | None:
        if path is None and self.runs_root is None:
            return None
        run = RunDir.create(path or self.runs_root / f"run-{len(self.sent):03d}-{cfg.model.name}", cfg.model.name)
        save_config(cfg, run.config_path)
        run.update_status(status="preparing", model=cfg.model.name, data=cfg.data.path)
        return run

    def _k(self, cfg: RunConfig) -> int:
        """Layers per round as the session resolves it."""
        n_layers = self.model_info.n_layers
        if cfg.boost.layers is not None:
            return len(set(cfg.boost.layers))
        k = cfg.boost.layers_per_round if cfg.boost.layers_per_round is not None else default_k(n_layers)
        check_k(k, n_layers)
        return k

    def _preflight(self, cfg: RunConfig, k: int, limit: int | None = None, trial: bool = False) -> P.PreflightResult:
        """The engine's own analytic preflight of the embedded model's shape, against
        ``available`` (or the limit) instead of this machine's memory."""
        cfg = copy.deepcopy(cfg)
        cfg.boost.layers_per_round = k
        share = memory.DeviceShare("cpu", SMOLLM2_SHAPE.n_layers, SMOLLM2_SHAPE.n_params, lm_head=True)
        measured = {"cpu": int(memory.estimate(SMOLLM2_SHAPE, cfg, "cpu", "fp32").total * 0.97)} if trial else None
        return preflight_result(SMOLLM2_SHAPE, cfg, [share], "fp32", lambda _: limit or self.available,
                                measured=measured)


def demo_gpus(n: int) -> list[Device]:
    """``n`` identical 24 GB cards, as a worker on a multi-GPU machine lists them."""
    return [Device(device=f"cuda:{i}", name="NVIDIA GeForce RTX 4090", total_bytes=24 * 2**30,
                   free_bytes=21 * 2**30, bf16=True, compute_capability="8.9") for i in range(n)]


def demo_data_report(cfg: RunConfig) -> DataReport:
    """Reads the data for real (the engine's light readers); with no tokenizer at hand it
    counts a token per four characters and writes the ChatML template by hand."""
    from xgblora_engine.data.formats import detect_format, to_conversation
    from xgblora_engine.data.readers import read_rows

    rows = read_rows(cfg.data.path)
    fmt = detect_format(rows, cfg.data.format, cfg.data.columns)
    conversations = [to_conversation(r, fmt, i) for i, r in enumerate(rows, 1)]
    lengths = [max(1, len(str(c)) // 4) for c in conversations]
    n_eval = min(cfg.data.max_eval_examples, int(len(rows) * cfg.data.eval_fraction))
    s = sorted(lengths)
    return DataReport(
        source=cfg.data.path, format=fmt.format, columns=fmt.columns, all_columns=fmt.all_columns,
        n_rows=len(rows), n_train=len(rows) - n_eval, n_eval=n_eval, eval_source=f"{n_eval} rows held out",
        truncated=sum(n > cfg.data.seq_len for n in lengths), dropped=0, eval_dropped=0,
        token_mean=sum(lengths) / len(lengths), token_p95=s[int(0.95 * (len(s) - 1))], token_max=s[-1],
        seq_len=cfg.data.seq_len, fallback_template=False, lengths=lengths,
        preview=[_chatml(c, n > cfg.data.seq_len) for c, n in zip(conversations[:3], lengths)])


def _chatml(conversation, truncated: bool) -> PreviewExample:
    if isinstance(conversation, str):
        return PreviewExample(text=conversation, spans=[(0, len(conversation))], truncated=truncated)
    text, spans = "", []
    for turn in conversation:
        head = f"<|im_start|>{turn['role']}\n"
        start = len(text) + len(head)
        text += head + turn["content"] + "<|im_end|>"
        if turn["role"] == "assistant":
            spans.append((start, len(text)))
        text += "\n"
    return PreviewExample(text=text, spans=spans, truncated=truncated)


# Scripted sample answers: a held-out question, its reference, and what the model says as
# it learns (the base model's answer first, the reference once two thirds of the run are done).
DEMO_SAMPLES = (
    ("What is the Unicode name of the character 'é'?", "LATIN SMALL LETTER E WITH ACUTE",
     "The character 'é' is the letter e with an accent.", "LATIN SMALL LETTER E WITH GRAVE"),
    ("What is the Unicode name of the character 'Ω'?", "GREEK CAPITAL LETTER OMEGA",
     "Ω is the Greek letter omega, used for ohms.", "GREEK CAPITAL LETTER OMEGA"),
    ("What is the Unicode name of the character '€'?", "EURO SIGN",
     "It is the euro currency symbol.", "EURO CURRENCY SIGN"),
    ("What is the Unicode name of the character 'ß'?", "LATIN SMALL LETTER SHARP S",
     "ß is the German eszett.", "LATIN SMALL LETTER S"),
)


def _sample_answers(cfg: RunConfig, step: int, rnd: int, total: int) -> list[P.SampleAnswers]:
    if not cfg.train.samples:
        return []
    answers = [scored(prompt, reference, base if step == 0 else reference if 3 * step >= 2 * total else early)
               for prompt, reference, base, early in DEMO_SAMPLES[:cfg.train.samples]]
    return [P.SampleAnswers(step=step, round=rnd, answers=answers, seconds=0.4, **mean_scores(answers))]


def _loss_curve(step: int, rnd: int, kappa: int, rng: random.Random) -> float:
    within = (step - 1) % kappa
    jag = 0.05 * math.exp(-within)  # fresh booster: the first steps of a round are a little worse
    return 0.95 + 1.7 * math.exp(-step / 60) + jag + 0.12 * (rng.random() - 0.5)


def _chunks_of(events: list[P.Event]) -> Iterator[Chunk]:
    """Recorded events grouped so that each chunk ends with a step's metrics."""
    chunk: Chunk = []
    for event in events:
        if isinstance(event, P.StepMetrics) and chunk:
            yield chunk
            chunk = []
        chunk.append(event)
    if chunk:
        yield chunk


class _Recorder:
    """Writes each chunk to the run's events.jsonl on its way out, as the engine does."""

    def __init__(self, run: RunDir | None) -> None:
        self.run = run

    def __call__(self, chunk: Chunk) -> Chunk:
        if self.run is not None:
            for event in chunk:
                self.run.record_event(P.to_dict(event))
        return chunk

    def chunks(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        for chunk in chunks:
            yield self(chunk)
