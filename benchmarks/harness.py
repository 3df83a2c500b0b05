"""One training method run the same way as every other: the shared core of the benchmarks.

A *method* is XGBLoRA (the engine's own trainer, unchanged), PEFT LoRA on every target
linear, or full fine-tuning. All see the same model, data order, batch, sequence length,
seed, loss (per target token, logits only at labelled positions), AdamW, clipping and
global cosine schedule. Each run reports:

* the training-loss curve and held-out loss curve against steps and training seconds
  (evaluation time excluded);
* exact match and token F1 of greedy answers on held-out items;
* median step time, wall and CPU (the CPU time is steadier on a shared machine);
* peak memory during training: sampled RSS on CPU, the allocator's peak on CUDA, and the
  same minus what the loaded model already held (the training overhead); on CPU with
  ``Setup.live_memory`` the RSS follows the live tensors, as the CUDA peak does;
* merge seconds and round seconds (XGBLoRA), trainable parameters.

``run_isolated`` runs one method in a fresh process, so peaks never leak between methods.

    python -m benchmarks.harness --one '{"method": {...}, "setup": {...}}'
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("XGBLORA_BENCH_RESULTS", ROOT / "benchmarks" / "results"))


@dataclass
class Method:
    name: str
    kind: str = "xgblora"  # xgblora | lora | full
    lr: float = 2e-3
    rank: int = 1
    k: int | None = None  # XGBLoRA layers per round (None: k_share of the layers, else the engine default)
    k_share: float | None = None  # XGBLoRA: k as a share of the model's layers (an earlier default's k)
    kappa: int = 10  # XGBLoRA steps per round
    sampling: str = "uniform"
    warmup: int = 2  # XGBLoRA: per round; baselines: once at the start
    optimizer_state: str = "fresh"  # XGBLoRA: "fresh" A and Adam state per round, "carry" (boost.carry) or "carry-b" (and boost.carry_b)
    lr_rule: str = "fixed"  # XGBLoRA: "scaled" trains boosters at lr·√(L/(k·r)); "fixed" at lr
    init: str = "kaiming"  # XGBLoRA: how A starts (kaiming | gradient)
    init_pool: int = 1  # XGBLoRA, init=gradient: A from the top pool·r directions
    lr_ratio_b: float = 1.0  # XGBLoRA: B's learning rate over A's (LoRA+)
    line_search: bool = False  # XGBLoRA: each round merged at the multiple that lowers the loss most
    schedule: str = "cosine"  # the global decay over the run: cosine (to 0.1×) or constant
    layers: list[int] | None = None  # XGBLoRA: the same layers every round (boost.layers) instead of drawn ones
    warm_rounds: int = 0  # XGBLoRA, a diagnostic: the first rounds train every layer (WarmStartTrainer)

    @classmethod
    def engine_defaults(cls, name: str, **changes) -> Method:
        """XGBLoRA exactly as the engine runs it when no setting is given."""
        from xgblora_engine.config import RunConfig

        cfg = RunConfig()
        b, t = cfg.boost, cfg.train
        method = cls(name, "xgblora", t.lr, rank=b.rank, k=b.layers_per_round, kappa=b.merge_every,
                     sampling=b.sampling, warmup=t.round_warmup, lr_rule=t.lr_rule, init=b.init,
                     optimizer_state=("carry-b" if b.carry_b else "carry") if b.carry else "fresh",
                     init_pool=b.init_pool, lr_ratio_b=t.lr_ratio_b, line_search=b.line_search,
                     schedule=t.schedule)
        return replace(method, **changes)

    @classmethod
    def previous_defaults(cls, name: str, **changes) -> Method:
        """The engine's defaults before the top-biased half became them (up to b4dfa7d): a
        third of the layers drawn uniformly, B restarted at 0 after a 2-step warmup. Every
        earlier result named "xgb-default" was run with these, and the levers change them."""
        share = None if changes.get("k") is not None or changes.get("layers") else 1 / 3
        previous = {"k_share": share, "sampling": "uniform", "optimizer_state": "carry", "warmup": 2}
        return cls.engine_defaults(name, **{**previous, **changes})


@dataclass
class Setup:
    model: str = "default"
    data: str = "sample:unicode-names"
    steps: int = 100
    batch: int = 4
    seq_len: int = 128
    seed: int = 0
    eval_every: int = 20
    eval_examples: int = 40
    answer_items: int = 40  # held-out items answered greedily for exact match / F1
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "none"
    # CPU (Linux): run with glibc handing every block of 64 KiB or more back to the system when it
    # is freed, so the RSS peak is the peak of live tensors, as CUDA's max_memory_allocated
    # is; otherwise freed blocks stay in the process and the RSS holds what was live once
    # plus what the allocator kept. Steps are slower then: time is not read from such a run.
    live_memory: bool = False
    extra: dict = field(default_factory=dict)  # {section: {key: value}} passed to the RunConfig


def data_name(data: str) -> str:
    """A data set's short name, for files and tables: "sample:unicode-names" and
    "benchmarks/data/word-definitions.jsonl" -> "unicode-names", "word-definitions"."""
    return Path(data.split(":")[-1]).stem


def data_path(data: str) -> str:
    """A sample, or a file given relative to the repository (so results keep one key on
    every clone), as the engine reads it."""
    if data.startswith("sample:") or Path(data).is_absolute() or not (ROOT / data).exists():
        return data
    return str(ROOT / data)


# --- set-up -------------------------------------------------------------------------
def run_config(method: Method, setup: Setup):
    from xgblora_engine.config import RunConfig, update

    cfg = RunConfig()
    cfg.model.name, cfg.model.device, cfg.model.dtype = setup.model, setup.device, setup.dtype
    cfg.model.quantize = setup.quantize
    cfg.data.path, cfg.data.seq_len, cfg.data.max_eval_examples = data_path(setup.data), setup.seq_len, setup.eval_examples
    t = cfg.train
    t.max_steps, t.batch_size, t.seed, t.lr, t.eval_every = setup.steps, setup.batch, setup.seed, method.lr, setup.eval_every
    t.round_warmup, t.lr_rule, t.lr_ratio_b = method.warmup, method.lr_rule, method.lr_ratio_b
    t.schedule = method.schedule
    b = cfg.boost
    b.rank, b.layers_per_round, b.merge_every, b.sampling = method.rank, method.k, method.kappa, method.sampling
    b.init, b.init_pool, b.line_search, b.layers = method.init, method.init_pool, method.line_search, method.layers
    b.carry, b.carry_b = method.optimizer_state.startswith("carry"), method.optimizer_state == "carry-b"
    if method.kind != "xgblora":  # one round of the whole run: warmup once, then cosine
        b.merge_every = setup.steps
    update(cfg, setup.extra)
    return cfg.validate()


class Clock:
    """Training seconds (wall and CPU) with evaluation time left out."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._start: tuple[float, float] | None = None

    def start(self) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        if self._start:
            self.wall += time.perf_counter() - self._start[0]
            self.cpu += time.process_time() - self._start[1]
            self._start = None


@dataclass
class Record:
    steps: list[dict] = field(default_factory=list)  # step, loss, wall, cpu
    evals: list[dict] = field(default_factory=list)  # step, train_seconds, loss
    merges: list[dict] = field(default_factory=list)  # merge_seconds, round_seconds


# --- methods ------------------------------------------------------------------------
def train_xgblora(prepared, cfg, record: Record, clock: Clock, warm_rounds: int = 0) -> int:
    from xgblora_engine import protocol as P
    from xgblora_engine.boosting.trainer import BoostingTrainer
    from xgblora_engine.data.dataset import BatchStream, eval_batches

    last = [time.perf_counter(), time.process_time()]

    def emit(event) -> None:
        now = [time.perf_counter(), time.process_time()]
        if isinstance(event, P.StepMetrics):
            record.steps.append({"step": event.step, "loss": event.loss, "wall": event.seconds,
                                 "cpu": now[1] - last[1], "grad_norm": event.grad_norm})
        elif isinstance(event, P.RoundMerged):
            record.merges.append({"round": event.round, "merge_seconds": event.merge_seconds,
                                  "round_seconds": event.round_seconds, "booster_norm": event.booster_norm,
                                  "update_multiple": event.update_multiple})
        elif isinstance(event, P.EvalResult):
            clock.stop()
            record.evals.append({"step": event.step, "train_seconds": clock.wall, "train_cpu": clock.cpu,
                                 "loss": event.eval_loss})
            now = [time.perf_counter(), time.process_time()]
            clock.start()
        last[:] = now

    stream = BatchStream(prepared.data.train, cfg.train.batch_size, cfg.train.seed, prepared.pad_id)
    trainer = (_warm_start_trainer(warm_rounds) if warm_rounds else BoostingTrainer)(
        prepared.loaded.model, prepared.targets_by_layer, stream,
        lambda: _timed_out(eval_batches(prepared.data.eval, cfg.train.batch_size, prepared.pad_id), clock),
        cfg, prepared.k, emit)
    clock.start()
    trainer.fit()
    clock.stop()
    return trainer_param_count(prepared, cfg)


def _warm_start_trainer(warm_rounds: int):
    import math

    from xgblora_engine.boosting.trainer import BoostingTrainer

    class WarmStartTrainer(BoostingTrainer):
        """A diagnostic, not an engine option: the first ``warm_rounds`` rounds train every
        layer, at the rate the rule gives k = L (√(k/L) of the drawn rounds'), the later
        ones draw as the engine does. Its live peak is LoRA's."""

        def sample(self, round_index: int) -> list[int]:
            self.warm = round_index <= warm_rounds
            return list(range(self.n_layers)) if self.warm else super().sample(round_index)

        def optimizer(self, boosters):
            optimizer = super().optimizer(boosters)
            if self.warm:
                for group in optimizer.param_groups:
                    group["lr_scale"] *= math.sqrt(self.k / self.n_layers)
            return optimizer

    return WarmStartTrainer


def _timed_out(batches, clock: Clock):
    """Evaluation batches, with the clock stopped while they are read and scored."""
    clock.stop()
    yield from batches


def trainer_param_count(prepared, cfg) -> int:
    """Trainable values of one round: k layers' boosters."""
    from xgblora_engine.boosting.booster import linear_shape

    model = prepared.loaded.model
    per_layer = [sum(sum(linear_shape(model.get_submodule(n))) for n in names)
                 for names in prepared.targets_by_layer.values()]
    return int(cfg.boost.rank * statistics.mean(per_layer) * prepared.k)


def train_baseline(prepared, cfg, method: Method, record: Record, clock: Clock) -> int:
    import torch

    from xgblora_engine.boosting.loss import batch_to, count_targets, mean_loss, summed_loss
    from xgblora_engine.boosting.schedule import Schedule
    from xgblora_engine.data.dataset import BatchStream, eval_batches

    model, device = prepared.loaded.model, prepared.loaded.model.device
    params = trainable(model, prepared, method)
    optimizer = torch.optim.AdamW(params, lr=method.lr, weight_decay=cfg.train.weight_decay)
    schedule = Schedule(method.lr, cfg.train.max_steps, cfg.train.max_steps, method.warmup, cfg.train.schedule)
    stream = BatchStream(prepared.data.train, cfg.train.batch_size, cfg.train.seed, prepared.pad_id)

    def evaluate(step: int) -> None:
        clock.stop()
        model.eval()
        loss, _ = mean_loss(model, eval_batches(prepared.data.eval, cfg.train.batch_size, prepared.pad_id), device)
        record.evals.append({"step": step, "train_seconds": clock.wall, "train_cpu": clock.cpu, "loss": loss})
        model.train()
        clock.start()

    evaluate(0)
    for step in range(cfg.train.max_steps):
        started = (time.perf_counter(), time.process_time())
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr(step)
        batch = batch_to(stream.next_batch(), device)
        loss = summed_loss(model, batch) / max(1, count_targets(batch["labels"]))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record.steps.append({"step": step + 1, "loss": float(loss.detach()), "wall": time.perf_counter() - started[0],
                             "cpu": time.process_time() - started[1], "grad_norm": float(grad_norm)})
        every = cfg.train.eval_every  # 0: only at the end, as the engine does
        if (every and (step + 1) % every == 0) or step + 1 == cfg.train.max_steps:
            evaluate(step + 1)
    clock.stop()
    return sum(p.numel() for p in params)


def trainable(model, prepared, method: Method) -> list:
    """LoRA adapters injected on every target linear, or every weight for full fine-tuning."""
    if method.kind == "full":
        model.requires_grad_(True)
    else:
        from peft import LoraConfig, inject_adapter_in_model

        names = [n for names in prepared.targets_by_layer.values() for n in names]
        config = LoraConfig(r=method.rank, lora_alpha=2 * method.rank, lora_dropout=0.0, target_modules=names)
        inject_adapter_in_model(config, model)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    model.train()
    return [p for p in model.parameters() if p.requires_grad]


# --- answers ------------------------------------------------------------------------
def answer_scores(prepared, n_items: int) -> dict:
    """Greedy answers to held-out prompts against their reference responses."""
    import torch

    from xgblora_engine.boosting.loss import IGNORE
    from xgblora_engine.export.common import end_of_turn_ids
    from xgblora_engine.scoring import token_f1

    model, tok = prepared.loaded.model, prepared.loaded.tokenizer
    eot = end_of_turn_ids(tok)
    model.eval()
    exact, f1s, examples = 0, [], []
    items = prepared.data.eval[:n_items]
    for e in items:
        first = next(i for i, label in enumerate(e.labels) if label != IGNORE)
        reference = tok.decode([t for t in e.labels[first:] if t != IGNORE and t not in eot],
                               skip_special_tokens=True).strip()
        ids = torch.tensor([e.input_ids[:first]], device=model.device)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=len(e.labels) - first + 8, eos_token_id=eot, pad_token_id=eot[0],
                                 temperature=None, top_p=None, top_k=None)
        answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        exact += answer == reference
        f1s.append(token_f1(answer, reference))
        if len(examples) < 5:
            examples.append({"reference": reference, "answer": answer})
    return {"exact_match": exact / max(1, len(items)), "token_f1": statistics.mean(f1s) if f1s else 0.0,
            "n_items": len(items), "examples": examples}


# --- one run ------------------------------------------------------------------------
def run(method: Method, setup: Setup) -> dict:
    import torch

    from xgblora_engine import memory
    from xgblora_engine.session import prepare

    torch.manual_seed(setup.seed)
    cfg = run_config(method, setup)
    prepared = prepare(cfg, lambda event: None)
    if method.kind == "xgblora" and method.k is None and method.layers is None and method.k_share:
        prepared.k = cfg.boost.layers_per_round = max(1, round(len(prepared.targets_by_layer) * method.k_share))
    device = str(prepared.loaded.model.device)
    gc.collect()
    loaded = _memory_now(device)
    record, clock = Record(), Clock()
    with memory.PeakRSS(every=0.02) as rss:
        if method.kind == "xgblora":
            n_trainable = train_xgblora(prepared, cfg, record, clock, method.warm_rounds)
        else:
            n_trainable = train_baseline(prepared, cfg, method, record, clock)
    peak = torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else rss.peak
    answers = answer_scores(prepared, setup.answer_items) if setup.answer_items else {}
    return summarise(method, setup, cfg, prepared, record, clock, n_trainable, peak, loaded, answers)


def _memory_now(device: str) -> int:
    import torch

    from xgblora_engine import memory

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return memory.rss()


def summarise(method, setup, cfg, prepared, record, clock, n_trainable, peak, loaded, answers) -> dict:
    merge = sum(m["merge_seconds"] for m in record.merges)
    rounds = sum(m["round_seconds"] for m in record.merges)
    steps = record.steps[1:] or record.steps  # the first step pays one-off allocations
    return {
        "method": asdict(method), "setup": asdict(setup), "k": prepared.k if method.kind == "xgblora" else None,
        "n_layers": len(prepared.targets_by_layer), "device": str(prepared.loaded.model.device),
        "threads": _threads(), "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "trainable_params": n_trainable, "final_eval_loss": record.evals[-1]["loss"],
        "initial_eval_loss": record.evals[0]["loss"], "evals": record.evals,
        "train_loss": [s["loss"] for s in record.steps],
        "step_wall_s": statistics.median(s["wall"] for s in steps),
        "step_cpu_s": statistics.median(s["cpu"] for s in steps),
        "train_wall_s": clock.wall, "train_cpu_s": clock.cpu,
        "merge_s": merge, "merge_fraction": merge / (merge + rounds) if record.merges else None,
        "rounds": per_round(record, cfg), "clipped_share": clipped_share(record, cfg),
        "peak_bytes": int(peak), "loaded_bytes": int(loaded), "overhead_bytes": int(peak - loaded),
        **answers,
    }


def clipped_share(record: Record, cfg) -> float:
    """Share of optimizer steps whose gradient norm was clipped."""
    limit = cfg.train.max_grad_norm or float("inf")
    return sum(s["grad_norm"] > limit for s in record.steps) / max(1, len(record.steps))


def per_round(record: Record, cfg) -> list[dict]:
    """Per merged round: the booster's update norm, the mean gradient norm, the clipped share."""
    kappa, limit = cfg.boost.merge_every, cfg.train.max_grad_norm or float("inf")
    out = []
    for m in record.merges:
        steps = record.steps[(m["round"] - 1) * kappa:m["round"] * kappa]
        norms = [s["grad_norm"] for s in steps] or [0.0]
        out.append({"round": m["round"], "booster_norm": m["booster_norm"], "grad_norm": statistics.mean(norms),
                    "clipped_share": sum(n > limit for n in norms) / len(norms),
                    "update_multiple": m["update_multiple"]})
    return out


def _threads() -> int:
    import torch

    return torch.get_num_threads()


LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}  # a fixed threshold: no dynamic raise


def run_isolated(method: Method, setup: Setup) -> dict:
    """``run`` in a fresh Python process (clean peak memory); raises with its stderr on failure."""
    payload = json.dumps({"method": asdict(method), "setup": asdict(setup)})
    env = {**os.environ, **(LIVE_MEMORY_ENV if setup.live_memory else {})}
    out = subprocess.run([sys.executable, "-m", "benchmarks.harness", "--one", payload], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{method.name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def setup_from_args(args, **defaults) -> Setup:
    """The flags every benchmark script shares: --model --device --data --steps --quick."""
    setup = replace(Setup(**defaults), model=args.model, device=args.device)
    if args.data:
        setup = replace(setup, data=args.data)
    if args.steps:
        setup = replace(setup, steps=args.steps)
    return setup


def add_common_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="default", help="'default' (embedded SmolLM2-135M), a folder or a Hub id")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--data", help="data set (default: the script's own)")
    ap.add_argument("--steps", type=int, help="optimizer steps per run")
    ap.add_argument("--quick", action="store_true", help="a few steps of a few methods: checks the script runs")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", required=True)
    raw = json.loads(ap.parse_args().one)
    print(json.dumps(run(Method(**raw["method"]), Setup(**raw["setup"]))))


if __name__ == "__main__":
    main()
