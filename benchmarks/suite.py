"""Run a list of methods one after another (each in a fresh process), keep every result
as soon as it exists, and turn results into markdown tables and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.harness import RESULTS, Method, Setup, run_isolated

MB = 2**20


def run_all(name: str, jobs: list[tuple[Method, Setup]]) -> list[dict]:
    """Results of every job, added to results/<name>.json as soon as each exists; jobs
    already in that file are not run again (a long suite survives an interruption, and two
    scripts with a thread each can share one file)."""
    path = RESULTS / f"{name}.json"
    results = {job_key_of(r): r for r in load_rows(name)}
    for method, setup in jobs:
        key = job_key(method, setup)
        if key not in results:
            print(f"[{name}] {method.name} on {setup.data} ...", flush=True)
            row = run_isolated(method, setup)
            print(f"[{name}] {method.name}: eval loss {row['initial_eval_loss']:.3f} -> {row['final_eval_loss']:.3f}, "
                  f"step {row['step_wall_s']:.3f}s, peak {row['peak_bytes'] / MB:.0f} MB", flush=True)
            results[key] = row
            add_row(path, row)
    return [results[job_key(m, s)] for m, s in jobs]


def load_rows(name: str) -> list[dict]:
    return _rows(RESULTS / f"{name}.json")


def _rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def add_row(path: Path, row: dict) -> None:
    """Add ``row`` to the file, re-read under a lock so rows another script added stay."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = {job_key_of(r): r for r in _rows(path)}
        rows[job_key_of(row)] = row
        save(path, list(rows.values()))


def job_key(method: Method, setup: Setup) -> str:
    from dataclasses import asdict

    return json.dumps([asdict(method), asdict(setup)], sort_keys=True)


def job_key_of(row: dict) -> str:
    """The key of a saved row; a row written before a field existed ran at its default."""
    return json.dumps([{**_defaults(Method), **row["method"]}, {**_defaults(Setup), **row["setup"]}], sort_keys=True)


def _defaults(cls) -> dict:
    from dataclasses import MISSING, fields

    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def save(path: Path, rows: list[dict]) -> None:
    from xgblora_engine.fileio import atomic_write_text

    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps({"rows": rows}, indent=1))


def loss_at_seconds(row: dict, seconds: float, clock: str = "train_seconds") -> float:
    """Held-out loss reached after ``seconds`` of training (wall, or "train_cpu"),
    interpolated between evaluations."""
    points = [(e[clock], e["loss"]) for e in row["evals"]]
    for (t0, l0), (t1, l1) in zip(points, points[1:]):
        if t0 <= seconds <= t1:
            return l0 + (l1 - l0) * (seconds - t0) / max(t1 - t0, 1e-9)
    return points[-1][1] if seconds >= points[-1][0] else points[0][1]


def mean_spread(values: list[float], scale: float = 1.0) -> str:
    """'mean ± standard deviation' (sample std over seeds), or the one value."""
    values = [v * scale for v in values]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.3f} ± {std:.3f}"


def table(rows: list[dict], columns: list[tuple[str, str, callable]]) -> str:
    """A markdown table; columns are (header, alignment ':' marks, value function)."""
    head = "| " + " | ".join(h for h, _, _ in columns) + " |"
    rule = "|" + "|".join(a for _, a, _ in columns) + "|"
    body = ["| " + " | ".join(fmt(f(r)) for _, _, f in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def describe(m: dict, k: int | None) -> str:
    if m["kind"] == "full":
        return "full fine-tuning"
    if m["kind"] == "lora":
        return f"LoRA r={m['rank']}"
    if m.get("layers"):  # the same layers every round: nothing is drawn
        extra = f" layers {m['layers'][0]}–{m['layers'][-1]} only"
    else:
        extra = "" if m["sampling"] == "uniform" else f" {m['sampling']}"
    if m.get("init", "kaiming") != "kaiming":
        extra += f" {m['init']} start"
    if m.get("lr_ratio_b", 1.0) != 1.0:
        extra += f" B×{m['lr_ratio_b']:g}"
    if m.get("optimizer_state") == "carry":
        extra += " carried"
    elif m.get("optimizer_state") == "carry-b":
        extra += " carried with B"
    if m.get("warmup", 2) != 2:
        extra += f" warmup {m['warmup']}"
    rate = f"lr {m['lr']:g}" + (" scaled" if m.get("lr_rule") == "scaled" else "")
    return f"XGBLoRA r={m['rank']} k={k} κ={m['kappa']}{extra}, {rate}"


def plot_mean_curves(groups: list[list[dict]], path: Path, title: str, x: str = "step") -> None:
    """Held-out loss against steps or training CPU seconds: the mean over seeds of each
    method as a line, the spread between seeds as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for rows in groups:
        n = min(len(r["evals"]) for r in rows)
        xs = np.mean([[e[x] for e in r["evals"][:n]] for r in rows], axis=0)
        ys = np.array([[e["loss"] for e in r["evals"][:n]] for r in rows])
        style = "-" if rows[0]["method"]["kind"] == "xgblora" else "--"
        line, = ax.plot(xs, ys.mean(axis=0), style, marker="o", markersize=2.5,
                        label=describe(rows[0]["method"], rows[0].get("k")) + f" ({len(rows)} seeds)")
        if len(rows) > 1:
            ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("optimizer step" if x == "step" else "training CPU seconds (evaluation excluded)")
    ax.set_ylabel("held-out loss")
    ax.set_ylim(top=min(ax.get_ylim()[1], 3.5))  # the step-0 loss would squash the curves
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
