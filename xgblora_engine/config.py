"""Run settings: one dataclass per concern, the single source of every default.

The CLI flags, the YAML config file and the desktop app all read and write these
dataclasses; nothing else holds a default. Importing this module loads no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xgblora_engine.errors import UserError

DTYPES = ("auto", "fp32", "bf16", "fp16")
QUANTIZE = ("none", "4bit", "8bit")
REPORT_TO = ("none", "tensorboard")
SAMPLING = ("uniform", "cyclic", "stratified", "top-biased", "gradient", "explicit")
TRAIN_ON = ("response", "all")
INITS = ("kaiming", "gradient", "gradient-first", "offset")
CARRYING_INITS = ("kaiming", "gradient-first")  # the starts a layer's next booster can continue
LR_RULES = ("scaled", "drawn", "linear", "fixed")
FORMATS = ("auto", "alpaca", "chat", "prompt_completion", "text")


@dataclass
class ModelConfig:
    name: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2-135M-Instruct), a local folder, a .gguf file or a Hub id"})
    dtype: str = field(default="auto", metadata={"help": "compute dtype of the frozen base: auto picks bf16 where the device supports it, else fp32"})
    quantize: str = field(default="none", metadata={"help": "load the frozen base in 4-bit (nf4) or 8-bit through bitsandbytes to save memory"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    shard_gpus: int = field(default=1, metadata={"help": "spread one copy of the model over this many GPUs (cuda:0 to cuda:N-1, whole layers per GPU) for models bigger than one card; 1: one device. Not with --num-processes, which copies the model to every GPU"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward (non-reentrant): less memory, ~30% slower"})
    target_modules: list[str] | None = field(default=None, metadata={"help": "names of the linears inside a layer that get boosters; default: all of them"})


@dataclass
class DataConfig:
    path: str = field(default="sample", metadata={"help": "'sample' (bundled), a .jsonl/.json/.csv/.parquet/.txt file or a Hub dataset id"})
    eval_path: str | None = field(default=None, metadata={"help": "held-out file; default: a fraction split off the training data"})
    eval_fraction: float = field(default=0.1, metadata={"help": "fraction of the data held out for evaluation when no eval file is given"})
    max_eval_examples: int = field(default=64, metadata={"help": "cap on held-out examples scored at each evaluation"})
    format: str = field(default="auto", metadata={"help": "auto, alpaca, chat, prompt_completion or text"})
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "column mapping, e.g. {instruction: question, output: answer}"})
    seq_len: int = field(default=256, metadata={"help": "tokens per example; longer ones are truncated and counted"})
    train_on: str = field(default="response", metadata={"help": "'response': loss on the assistant's tokens only; 'all': every token"})


@dataclass
class BoostConfig:
    rank: int = field(default=8, metadata={"help": "rank r of each booster; the paper uses r=1, r=8 learned more per step than r=4 at the same step time and memory, on three seeds of two data sets (docs/benchmarks.md)"})
    alpha: float | None = field(default=None, metadata={"help": "booster scale is alpha/r; default 2r (scale 2)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the booster's input"})
    layers_per_round: int | None = field(default=None, metadata={"help": "k, layers boosted per round; default half the layers, drawn top-biased"})
    layers: list[int] | None = field(default=None, metadata={"help": "explicit layer list used every round instead of sampling"})
    merge_every: int = field(default=20, metadata={"help": "kappa, optimizer steps per round before the booster is merged"})
    sampling: str = field(default="top-biased", metadata={"help": "how layers are drawn: top-biased (weight ∝ depth: backward stops higher, so rounds are cheaper; every layer stays drawable), uniform, cyclic (every layer once per ⌈L/k⌉ rounds), stratified (spread over depth) or gradient (∝ each layer's gradient norm, measured by one extra pass per round)"})
    init: str = field(default="kaiming", metadata={"help": "how a booster starts: kaiming (A random, B zero, as LoRA), gradient (every booster's A along the top directions of its round's first weight gradient), gradient-first (only a module's first booster aimed so; with carry, later ones continue it) or offset (A and B both random, their start subtracted)"})
    init_pool: int = field(default=1, metadata={"help": "with init=gradient or gradient-first: draw A's r directions at random from the gradient's top pool*r (1: exactly the top r)"})
    carry: bool = field(default=True, metadata={"help": "a layer drawn again starts from its last booster's A and the Adam moments of both factors (and its B, with carry_b), instead of a fresh A and fresh moments; with the kaiming and gradient-first starts (the gradient and offset starts set A every round)"})
    line_search: bool = field(default=False, metadata={"help": "merge each round's update at the multiple (0 to 2) that lowers the loss of the next batch most, a parabola through 0, 1 and 2 (gradient boosting's line search), instead of as trained; three forward passes a round. Measured worse than merging as trained on three data sets (seed 0): one batch is too noisy a judge (docs/method.md)"})
    carry_b: bool = field(default=True, metadata={"help": "with carry: B too resumes from the layer's last booster, and that start B0·A0 is subtracted, so attaching still changes nothing; a layer drawn again continues where it stopped instead of growing B from 0"})

    @property
    def carries(self) -> bool:
        """Whether rounds hand A and the moments on: the other starts set A every round."""
        return self.carry and self.init in CARRYING_INITS

    @property
    def scaling(self) -> float:
        return (self.alpha if self.alpha is not None else 2.0 * self.rank) / self.rank


@dataclass
class TrainConfig:
    max_steps: int = field(default=200, metadata={"help": "optimizer steps in all; rounds T = max_steps / merge_every"})
    lr: float = field(default=6e-3, metadata={"help": "peak learning rate; with the scaled rule, the rate of a rank-1 booster on every layer (boosters train at lr·sqrt(L/(k·r)))"})
    batch_size: int = field(default=4, metadata={"help": "examples per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    round_warmup: int = field(default=0, metadata={"help": "warmup steps at the start of every round; for rounds that start cold (no carry, or B restarted at 0), 2 tames the first steps of fresh Adam state"})
    schedule: str = field(default="cosine", metadata={"help": "global LR decay over the run: cosine or constant"})
    lr_rule: str = field(default="scaled", metadata={"help": "scaled: the boosters train at lr·sqrt(L/(k·r)), so lr carries across rank and layers per round; drawn: the same per layer with the layer's share of the draws p for k/L, lr·sqrt(1/(p·r)); linear: lr·(L/k)/sqrt(r); fixed: at lr as given"})
    lr_ratio_b: float = field(default=1.0, metadata={"help": "learning rate of the boosters' B factors relative to A's (LoRA+; 1 = the same)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay on booster factors"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    eval_every: int = field(default=50, metadata={"help": "evaluate every N steps (0 = only at the end)"})
    samples: int = field(default=4, metadata={"help": "held-out prompts answered greedily at every evaluation, to watch what the model says (0 = none)"})
    sample_tokens: int = field(default=32, metadata={"help": "longest sample answer, in tokens (answers stop earlier at their end of turn)"})
    report_to: str = field(default="none", metadata={"help": "also log the run to: none or tensorboard (event files in RUN/tensorboard; needs the tensorboard package)"})
    seed: int = field(default=0, metadata={"help": "seed for data order, layer sampling and booster init"})
    nan_retry_lr_factor: float = field(default=0.5, metadata={"help": "LR factor for the retry of a round rolled back for NaN/inf"})


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    boost: BoostConfig = field(default_factory=BoostConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        cfg = cls()
        update(cfg, raw)
        return cfg

    @classmethod
    def from_saved(cls, raw: dict[str, Any]) -> RunConfig:
        """A run's own config.yaml: a setting it predates keeps the meaning it had then."""
        return cls.from_dict(as_then(raw))

    def validate(self) -> RunConfig:
        validate(self)
        return self


def as_then(raw: dict[str, Any]) -> dict[str, Any]:
    """Saved settings (a run's config.yaml, the window's last settings) with what they
    predate made explicit: settings written before the learning-rate rule meant lr
    literally, those written before boost.carry started every round fresh, and those
    written before boost.carry_b restarted B at 0."""
    train, boost = raw.get("train") or {}, raw.get("boost") or {}
    if isinstance(train, dict) and "lr" in train and "lr_rule" not in train:
        raw = {**raw, "train": {**train, "lr_rule": "fixed"}}
    if isinstance(boost, dict) and boost:
        raw = {**raw, "boost": {"carry": False, "carry_b": False, **boost}}
    return raw


SECTIONS = {"model": ModelConfig, "data": DataConfig, "boost": BoostConfig, "train": TrainConfig}


def update(cfg: RunConfig, raw: dict[str, Any], source: str = "config",
           names: dict[str, str] | None = None) -> RunConfig:
    """Apply a nested mapping ``{section: {key: value}}`` onto cfg, rejecting unknown keys.
    ``names`` maps "section.key" to what the user typed (a flag) for error messages."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}",
                        "write sections model:, data:, boost:, train: with their settings")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise UserError(f"{source}: unknown section '{section}'",
                            f"sections are: {', '.join(SECTIONS)}")
        if values is None:
            continue
        target = getattr(cfg, section)
        known = {f.name: f for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in known:
                raise UserError(f"{source}: unknown setting '{section}.{key}'",
                                f"settings of '{section}' are: {', '.join(known)}")
            name = (names or {}).get(f"{section}.{key}", f"{section}.{key}")
            setattr(target, key, _coerce(value, known[key], name, source))
    return cfg


def _coerce(value: Any, f: dataclasses.Field, name: str, source: str) -> Any:
    """Turn YAML/flag values into the field's type, with a clear message when impossible."""
    if value is None:
        return None
    kind = str(f.type)
    try:
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if kind.startswith("list[int]"):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return [int(v) for v in value]
        if kind.startswith("list[str]"):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return [str(v) for v in value]
        if kind.startswith("dict"):
            if isinstance(value, str):
                value = dict(p.split("=", 1) for p in value.split(",") if p)
            return {str(k): str(v) for k, v in dict(value).items()}
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: '{name}' has an invalid value {value!r}",
                        f"expected {kind.replace(' | None', '')}") from None


def _choice(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise UserError(f"invalid {name} '{value}'", f"choose one of: {', '.join(allowed)}")


def validate(cfg: RunConfig) -> None:
    """Checks that need no model. Layer counts are checked once the model is known."""
    m, d, b, t = cfg.model, cfg.data, cfg.boost, cfg.train
    _choice(m.dtype, DTYPES, "dtype")
    _choice(m.quantize, QUANTIZE, "quantization")
    _choice(b.sampling, SAMPLING, "layer sampling")
    _choice(b.init, INITS, "booster init")
    _choice(t.lr_rule, LR_RULES, "learning-rate rule")
    _choice(d.train_on, TRAIN_ON, "train_on")
    _choice(d.format, FORMATS, "data format")
    _choice(t.schedule, ("cosine", "constant"), "schedule")
    _choice(t.report_to, REPORT_TO, "report_to")
    checks = [
        (m.shard_gpus >= 1, f"invalid number of GPUs to shard over: {m.shard_gpus}", "use --shard-gpus 1 (one device) or the number of GPUs to spread the model over"),
        (b.rank >= 1, f"invalid rank {b.rank}: the rank of a booster must be at least 1", "use --rank 1 (the paper's setting) or higher"),
        (b.layers_per_round is None or b.layers_per_round >= 1, f"invalid layers per round {b.layers_per_round}: must be at least 1", "use --layers-per-round 1 or more"),
        (b.init_pool >= 1, f"invalid init pool {b.init_pool}: must be at least 1", "use --init-pool 1 (the top r directions) or more"),
        (t.lr_ratio_b > 0 and math.isfinite(t.lr_ratio_b), f"invalid B learning-rate ratio {t.lr_ratio_b}", "use a positive value such as 1 (plain) or 4 (LoRA+)"),
        (b.merge_every >= 1, f"invalid merge interval {b.merge_every}: must be at least 1 step", "use --merge-every 20, for example"),
        (0.0 <= b.dropout < 1.0, f"invalid dropout {b.dropout}", "use a value in [0, 1)"),
        (t.max_steps >= 1, f"invalid max steps {t.max_steps}", "use --max-steps 1 or more"),
        (t.lr > 0 and math.isfinite(t.lr), f"invalid learning rate {t.lr}", "use a positive value such as 1e-2"),
        (t.batch_size >= 1, f"invalid batch size {t.batch_size}", "use --batch-size 1 or more"),
        (t.grad_accum >= 1, f"invalid gradient accumulation {t.grad_accum}", "use --grad-accum 1 or more"),
        (t.round_warmup >= 0, f"invalid round warmup {t.round_warmup}", "use 0 or more steps"),
        (t.samples >= 0, f"invalid number of sample prompts {t.samples}", "use --samples 0 (none) or more, e.g. 4"),
        (t.sample_tokens >= 1, f"invalid sample answer length {t.sample_tokens}", "use --sample-tokens 1 or more, e.g. 48"),
        (d.seq_len >= 8, f"invalid sequence length {d.seq_len}", "use --seq-len 8 or more (256 is typical)"),
        (0.0 <= d.eval_fraction < 1.0, f"invalid eval fraction {d.eval_fraction}", "use a value in [0, 1), e.g. 0.1"),
    ]
    for ok, message, hint in checks:
        if not ok:
            raise UserError(message, hint)
    if b.layers is not None and b.sampling not in (BoostConfig().sampling, "explicit"):  # a strategy set on purpose
        raise UserError("an explicit layer list and a sampling strategy were both given",
                        "drop --layers or the sampling setting")
    if b.layers is not None:
        b.sampling = "explicit"
        if not b.layers:
            raise UserError("the explicit layer list is empty", "give layer indices, e.g. --layers 20,25,29")


def load_config_file(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}", "check the path given to --config")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {p} is not valid YAML{where}", "fix the syntax and try again") from None
    return raw


def save_config(cfg: RunConfig, path: str | Path) -> None:
    import yaml

    from xgblora_engine.fileio import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
