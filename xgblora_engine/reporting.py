"""Mirrors of a run's events in other tools (``train.report_to``): TensorBoard event files
in RUN/tensorboard, written from the same events the run folder records."""

from __future__ import annotations

from pathlib import Path

from xgblora_engine import protocol as P
from xgblora_engine.errors import UserError

MISSING = ("TensorBoard logging (--report-to tensorboard) needs the tensorboard package, which is not installed",
           "pip install tensorboard (or install xgblora-studio[tensorboard]), or train without --report-to")


def check_available(report_to: str) -> None:
    """Before the model loads: a missing package is said at once, not after minutes."""
    if report_to == "tensorboard":
        _summary_writer()


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(*MISSING) from None
    return SummaryWriter


class TensorBoardReport:
    """Scalars per step (loss, lr, gradient norm, throughput, memory), per evaluation
    (held-out loss, sample scores and answers as text) and per round (booster norm)."""

    def __init__(self, run_path: Path) -> None:
        self.writer = _summary_writer()(log_dir=str(Path(run_path) / "tensorboard"))

    def __call__(self, event) -> None:
        w = self.writer
        if isinstance(event, P.StepMetrics):
            for name, value in (("train/loss", event.loss), ("train/lr", event.lr),
                                ("train/grad_norm", event.grad_norm), ("train/tokens_per_s", event.tokens_per_s)):
                w.add_scalar(name, value, event.step)
        elif isinstance(event, P.EvalResult):
            w.add_scalar("eval/loss", event.eval_loss, event.step)
        elif isinstance(event, P.SampleAnswers):
            w.add_scalar("samples/token_f1", event.token_f1, event.step)
            w.add_scalar("samples/exact_match", event.exact_match, event.step)
            w.add_text("samples/answers", "\n\n".join(
                f"**{a.prompt}**  \nreference: {a.reference}  \nanswer: {a.answer}" for a in event.answers), event.step)
        elif isinstance(event, P.MemorySample):
            w.add_scalar("memory/bytes", event.peak if event.peak is not None else event.rss, event.step)
        elif isinstance(event, P.RoundMerged):
            w.add_scalar("rounds/booster_norm", event.booster_norm, event.step)

    def close(self) -> None:
        self.writer.close()
