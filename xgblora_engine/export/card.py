"""The model card (README.md) of an export and its loss plot, from the run folder alone:
settings from config.yaml, rounds from the ledger, losses from run.json / metrics.jsonl."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

PLOT_NAME = "loss.png"


def base_model_id(cfg, source) -> str | None:
    """The Hub id of the base, when there is one (the card's ``base_model`` field)."""
    if source.kind == "hub":
        return source.path
    if source.kind == "default":
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    return None


def base_license(source) -> str:
    """The card's ``license``: a fine-tune inherits its base's. Known for the embedded
    model; read from a local base's own card; else "other", which the Hub accepts and
    which tells the reader to look at the base."""
    if source.kind == "default":
        return "apache-2.0"
    card = Path(source.path) / "README.md"
    if source.kind == "folder" and card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            try:
                front = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                front = {}
            if isinstance(front, dict) and isinstance(front.get("license"), str):
                return front["license"]
    return "other"


def base_lines(cfg, source, base: str | None) -> list[str]:
    """What the base weights were, truthfully: a GGUF file's are its dequantized values,
    not the Hub checkpoint's, even when the card names that checkpoint as ``base_model``."""
    lines = [f"* `{cfg.model.name}` ({source.display_name})" + (f", from the Hub model `{base}`" if base else "")]
    if source.gguf_file:
        lines.append(f"* weights: the GGUF file `{source.gguf_file}`, dequantized to fp32 for training and for "
                     "this merge; they differ from the Hub checkpoint's by that file's rounding")
    elif cfg.model.quantize != "none":
        lines.append(f"* trained on a {cfg.model.quantize} base")
    else:
        lines.append("* trained on the full-precision base")
    return lines


def final_losses(status: dict, metrics: list[dict]) -> tuple[float | None, float | None, int]:
    train = status.get("final_loss")
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    steps = [m for m in metrics if "loss" in m]
    if train is None and steps:
        train = steps[-1]["loss"]
    ev = status.get("final_eval_loss")
    if ev is None and evals:
        ev = evals[-1]
    n_steps = int(status.get("step") or (steps[-1]["step"] if steps else 0))
    return train, ev, n_steps


def draw_loss_plot(metrics: list[dict], path: Path) -> bool:
    """Training loss per step (and held-out loss), with round boundaries. False when there
    is nothing to draw or matplotlib is not installed."""
    steps = [m for m in metrics if "loss" in m and not m.get("rolled_back")]
    evals = [m for m in metrics if "eval_loss" in m]
    if not steps and not evals:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if steps:
        x = [m["step"] for m in steps]
        y = [m["loss"] for m in steps]
        ax.plot(x, y, color="#4c72b0", linewidth=0.8, alpha=0.45, label="training loss")
        window = max(1, len(y) // 20)
        if window > 1:
            smooth = [sum(y[max(0, i - window + 1):i + 1]) / len(y[max(0, i - window + 1):i + 1])
                      for i in range(len(y))]
            ax.plot(x, smooth, color="#4c72b0", linewidth=1.8, label=f"training loss ({window}-step mean)")
        rounds = [a["step"] for a, b in zip(steps, steps[1:]) if a.get("round") != b.get("round")]
        for r in rounds[:200]:
            ax.axvline(r + 0.5, color="#bbbbbb", linewidth=0.5, zorder=0)
    if evals:
        ax.plot([m["step"] for m in evals], [m["eval_loss"] for m in evals], "o-", color="#dd8452",
                label="held-out loss")
    ax.set_xlabel("optimizer step (grey lines: round boundaries)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def layer_counts(ledger) -> Counter:
    return Counter(layer for r in ledger.rounds for layer in r.layers)


def model_card(info, source, dtype: str, plot: bool, extra_formats: str = "") -> str:
    """README.md of a merged export."""
    cfg, ledger, status = info.cfg, info.ledger, info.status
    train, ev, n_steps = final_losses(status, info.run.metrics())
    base = base_model_id(cfg, source)
    b, t, d = cfg.boost, cfg.train, cfg.data
    counts = layer_counts(ledger)
    ranks = [ledger.rank_of(m) for m in ledger.modules()]
    front = {"library_name": "transformers", "pipeline_tag": "text-generation", "license": base_license(source),
             "tags": ["xgblora", "lora", "gradient-boosting", "fine-tuned"]}
    if base:
        front["base_model"] = base
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {source.display_name or cfg.model.name} fine-tuned with XGBLoRA", "",
             "Merged weights of a model fine-tuned with XGBLoRA (gradient boosting over many "
             "small LoRA boosters, arXiv 2410.19694), rebuilt from the original checkpoint plus "
             f"the run's fp32 booster ledger and saved in **{dtype}**.", "",
             "## Base model", "", *base_lines(cfg, source, base), "",
             "## Training data", "",
             f"* `{d.path}` (format {d.format}, loss on {d.train_on} tokens, sequence length {d.seq_len})",
             f"* held out: `{d.eval_path}`" if d.eval_path else f"* held out: {d.eval_fraction:.0%} of the data", "",
             "## Settings", "",
             "| setting | value |", "|---|---|",
             f"| booster rank r | {b.rank} |", f"| alpha (scale α/r) | {b.alpha if b.alpha is not None else 2 * b.rank} ({b.scaling:g}) |",
             f"| layers per round k | {b.layers_per_round} ({b.sampling} sampling) |",
             f"| steps per round κ | {b.merge_every} |",
             f"| optimizer steps | {t.max_steps} (batch {t.batch_size} × {t.grad_accum} accumulation) |",
             f"| learning rate | {t.lr:g}, {t.schedule}, {t.round_warmup} warmup steps per round |",
             f"| seed | {t.seed} |", "",
             "<details><summary>config.yaml</summary>", "", "```yaml",
             yaml.safe_dump(cfg.to_dict(), sort_keys=False).strip(), "```", "</details>", "",
             "## Boosting rounds", "",
             f"* {len(ledger.rounds)} rounds merged, {n_steps} optimizer steps",
             f"* {len(ranks)} modules updated; merged rank per module {min(ranks, default=0)}–{max(ranks, default=0)}",
             "* rounds per layer: " + (", ".join(f"{layer}: {n}" for layer, n in sorted(counts.items())) or "none"),
             ]
    retried = [r.round for r in ledger.rounds if r.lr_factor < 1]
    if retried:
        lines.append(f"* rounds retried at a lower learning rate after a NaN/inf rollback: {retried}")
    lines += ["", "## Results", ""]
    lines.append(f"* final training loss: {train:.4f}" if train is not None else "* final training loss: not recorded")
    lines.append(f"* final held-out loss: {ev:.4f}" if ev is not None else "* final held-out loss: not recorded")
    if plot:
        lines += ["", f"![training and held-out loss]({PLOT_NAME})"]
    lines += ["", "## Use", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "", 'path = "."  # this folder',
              "tokenizer = AutoTokenizer.from_pretrained(path)",
              "model = AutoModelForCausalLM.from_pretrained(path)",
              'messages = [{"role": "user", "content": "What is the capital of France?"}]',
              "ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")",
              "out = model.generate(ids, max_new_tokens=128, do_sample=False)  # stops at the end-of-turn token",
              "print(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))", "```", ""]
    if extra_formats:
        lines += [extra_formats, ""]
    return "\n".join(lines)


def write_card(folder: Path, info, source, dtype: str) -> None:
    plot = draw_loss_plot(info.run.metrics(), folder / PLOT_NAME)
    (folder / "README.md").write_text(model_card(info, source, dtype, plot), encoding="utf-8")


def append_verification(folder: Path, checks: list) -> None:
    lines = ["", "## Verification at export", "",
             "Reloaded with plain transformers and compared with the merged model on fixed prompts:", ""]
    for c in checks:
        mark = "skipped" if c.skipped else ("passed" if c.ok else "FAILED")
        lines.append(f"* **{c.name}** — {mark}: {c.detail}")
    with open(folder / "README.md", "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
