"""Terminal progress for `xgblora train`: a bar with loss, round and ETA on a TTY,
plain periodic lines otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import time

from xgblora_engine import protocol as P
from xgblora_engine.memory.units import transfer_text
from xgblora_engine.payloads import VERDICT_WORDS


class ConsoleReporter:
    """Consumes protocol events and draws them on the terminal."""

    def __init__(self, stream=None, every: int = 10) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self.bar = None
        self.total = 0
        self.eval_loss: float | None = None
        self.first_samples: P.SampleAnswers | None = None  # the base model's answers
        self.last_samples: P.SampleAnswers | None = None
        self.started = time.perf_counter()
        self.download_tenth = -1

    def __enter__(self) -> ConsoleReporter:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, event: object) -> None:
        handler = getattr(self, f"on_{type(event).__name__}", None)
        if handler:
            handler(event)

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def on_RunStarted(self, e) -> None:
        self.total = e.total_steps
        self._print(f"run folder {e.run_dir}: {e.total_steps} steps in {e.total_rounds} rounds")
        self._print(boosters_line(e.config, e.n_layers))
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=e.total_steps, initial=e.start_step, file=self.stream,
                            unit="step", dynamic_ncols=True)

    def on_StepMetrics(self, e: P.StepMetrics) -> None:
        if self.bar is not None:
            self.bar.n = e.step
            self.bar.set_postfix_str(self._postfix(e), refresh=True)
        elif e.step % self.every == 0 or e.step == self.total:
            elapsed = time.perf_counter() - self.started
            eta = elapsed / max(e.step, 1) * (self.total - e.step)
            self._print(f"step {e.step}/{self.total} {self._postfix(e)} eta {eta:.0f}s")

    def _postfix(self, e) -> str:
        text = f"round {e.round} loss {e.loss:.4f} lr {e.lr:.2e} layers {_layers(e.layers)}"
        return text + (f" eval {self.eval_loss:.4f}" if self.eval_loss is not None else "")

    def on_EvalResult(self, e) -> None:
        self.eval_loss = e.eval_loss
        self._print(f"eval at step {e.step}: loss {e.eval_loss:.4f}")

    def on_SampleAnswers(self, e: P.SampleAnswers) -> None:
        self.first_samples = self.first_samples or e
        self.last_samples = e

    def print_samples(self) -> None:
        """The last answers beside the first ones (at step 0: the base model's)."""
        last, first = self.last_samples, self.first_samples
        if last is None:
            return
        self._print(f"sample answers at step {last.step}: token F1 {last.token_f1:.2f}, exact {last.exact_match:.0%}"
                    + (f" (step {first.step}: {first.token_f1:.2f}, {first.exact_match:.0%})" if first is not last else ""))
        before = {a.prompt: a.answer for a in first.answers} if first is not last else {}
        for a in last.answers:
            rows = [("prompt", _tail(a.prompt)), ("reference", _clip(a.reference))]
            if a.prompt in before:
                rows.append((f"step {first.step}", _clip(before[a.prompt])))
            rows.append((f"step {last.step}", _clip(a.answer)))
            for label, text in rows:
                self._print(f"  {label + ':':<12}{text}")

    def on_DownloadProgress(self, e: P.DownloadProgress) -> None:
        """A line at each tenth of a download and at its end: a log stays short."""
        tenth = int(10 * e.done_bytes / e.total_bytes) if e.total_bytes else 0
        if tenth > self.download_tenth or e.done_bytes >= e.total_bytes:
            self.download_tenth = 10 if e.done_bytes >= e.total_bytes else tenth
            self._print(f"downloading {e.repo_id}: {transfer_text(e.done_bytes, e.total_bytes, e.bytes_per_s)}")

    def on_RoundRolledBack(self, e) -> None:
        retry = f"; retrying at {e.retry_lr_factor:g}× LR" if e.retry_lr_factor else ""
        self._print(f"warning: round {e.round} rolled back ({e.reason}){retry}")

    def on_LogLine(self, e) -> None:
        self._print(e.text)

    def on_Warning(self, e) -> None:
        self._print(f"warning: {e.message}" + (f" ({e.hint})" if e.hint else ""))

    def on_Error(self, e) -> None:
        self._print(f"error: {e.message}")
        if e.hint:
            self._print(f"hint: {e.hint}")
        if e.kind == "internal" and e.detail:
            self._print(e.detail)

    def on_WorkerExited(self, e) -> None:
        if e.exitcode:
            self._print(f"error: {e.message}")

    def on_CheckpointSaved(self, e) -> None:
        if self.bar is None:
            self._print(f"checkpoint at step {e.step}")

    def on_StateChanged(self, e) -> None:
        if e.state in ("paused", "stopping") or (e.state == "loading" and e.detail):
            self._print(e.detail or e.state)

    def on_PreflightResult(self, e) -> None:
        from xgblora_engine.memory.units import human_bytes, summary

        self._print(f"memory: {e.message}")
        if len(e.devices) > 1:  # a sharded model: every GPU against its own free memory
            for d in e.devices:
                self._print(f"  {d.device}: {human_bytes(d.predicted_peak)} of {human_bytes(d.available)} "
                            f"({VERDICT_WORDS[d.verdict]}): {summary(d.parts)}")
        else:
            self._print(f"  parts: {summary(e.parts)}")
        for r in e.remedies:
            self._print(f"  remedy: {r.label} (saves ~{human_bytes(r.saves_bytes)})")

    def on_Finished(self, e) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        loss = f", final loss {e.final_loss:.4f}" if e.final_loss is not None else ""
        ev = f", eval loss {e.final_eval_loss:.4f}" if e.final_eval_loss is not None else ""
        self.print_samples()
        self._print(f"{e.status} after {e.steps} steps{loss}{ev}")


def _clip(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _tail(text: str, width: int = 100) -> str:
    """The end of a rendered prompt: the question, after the system text."""
    text = " ".join(text.split())
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _layers(layers: list[int]) -> str:
    return ",".join(map(str, layers)) if len(layers) <= 8 else f"{len(layers)} layers"


def boosters_line(cfg, n_layers: int) -> str:
    """What each round trains and the rate it trains at, as the learning-rate rule gives it."""
    from xgblora_engine.boosting.sampling import resolve_k
    from xgblora_engine.boosting.schedule import booster_lr, lr_rule_text

    b, t = cfg.boost, cfg.train
    k = resolve_k(b.layers, b.layers_per_round, n_layers)
    lr = booster_lr(t.lr, b.rank, k, n_layers, t.lr_rule)
    rule = lr_rule_text(t.lr, b.rank, k, n_layers, t.lr_rule)
    return (f"boosters: rank {b.rank} on {k} of {n_layers} layers a round, merged every {b.merge_every} "
            f"steps, {b.init} start; peak learning rate {lr:.3g} ({rule})")
