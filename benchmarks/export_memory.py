"""Peak memory of an hf export, streamed (tensor by tensor from the base's safetensors)
against the in-memory merge, on synthetic llama models of about 2 and 4 GB.

Offline: each model is a LlamaConfig with random weights (SmolLM2's tokenizer, from the
embedded model, so the verification prompts tokenize), saved as bf16 safetensors in
500 MB shards under /tmp and deleted at the end. A finished run is faked over it: a ledger
of two rounds of rank-4 updates on q_proj, v_proj and down_proj of the first, middle and
last layers. Each export runs in a fresh process, whose peak RSS (ru_maxrss, file pages
mapped included) is read at the end; the RSS once torch, transformers and the engine are
imported is the fixed overhead. The in-memory export, whose fp32 copy of the base needs
twice the bf16 size, is measured on the smaller model only.

Greedy answers are cut at 4 tokens (``max_new_tokens``): a random model never ends its turn,
and each token of a model whose weights stay on disk reads all of them again. So the
"stops at end of turn" check fails on these models, as it should; the other checks pass.

    OMP_NUM_THREADS=1 python -m benchmarks.export_memory [--sizes 2,4] [--shard 500MB] [--keep]

Writes benchmarks/results/export_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path("/tmp/xgblora-export-memory")
ROOT = Path(__file__).resolve().parents[1]
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS = 2048, 5632, 16, 4
LAYERS_FOR_GB = {2: 18, 4: 40}  # with SmolLM2's 49152-token vocabulary, untied: ~1.0 and ~2.0 B parameters
LEDGER_MODULES = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
RANK, MAX_NEW_TOKENS = 4, 4
TARGET_RATIO = 1.2  # peak ≤ 1.2 × the largest shard + the fixed overhead


# --- the synthetic model and its run ---------------------------------------------------
def build_model(folder: Path, layers: int, shard: str) -> None:
    """Random bf16 weights, saved in shards, with the embedded model's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from xgblora_engine.models.source import EMBEDDED_FILE, embedded_folder

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_folder()), gguf_file=EMBEDDED_FILE)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size=shard)
    tokenizer.save_pretrained(folder)


def fake_run(model: Path, run: Path, layers: int) -> Path:
    """A finished run over ``model``: config, status and a small ledger."""
    import torch

    from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord
    from xgblora_engine.config import RunConfig, save_config

    run.mkdir(parents=True)
    cfg = RunConfig()
    cfg.model.name = str(model)
    cfg.boost.rank = RANK
    save_config(cfg, run / "config.yaml")
    kv = KV_HEADS * HIDDEN // HEADS
    shapes = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.v_proj": (kv, HIDDEN),
              "mlp.down_proj": (HIDDEN, INTERMEDIATE)}
    g = torch.Generator().manual_seed(0)
    ledger = BoosterLedger()
    boosted = sorted({0, layers // 2, layers - 1})
    for t in (1, 2):
        factors = {f"model.layers.{layer}.{name}": (torch.randn(RANK, inp, generator=g) / inp ** 0.5,
                                                    torch.randn(out, RANK, generator=g) * 0.01, 2.0)
                   for layer in boosted for name, (out, inp) in shapes.items()}
        ledger.record_round(RoundRecord(round=t, step=10 * t, layers=boosted), factors)
    ledger.save(run / "ledger.safetensors")
    (run / "run.json").write_text(json.dumps({"status": "completed", "step": 20, "model": str(model)}))
    return run


def on_disk(folder: Path) -> tuple[int, int, int]:
    """(bytes of the weights, bytes of the largest shard, number of shards)."""
    sizes = [p.stat().st_size for p in folder.glob("model*.safetensors")]
    return sum(sizes), max(sizes), len(sizes)


# --- one export, in a fresh process ----------------------------------------------------
def measure(run: Path, out: Path, way: str) -> dict:
    """Run in the child: export ``run`` the given way; peak RSS, overhead, stages, checks."""
    import psutil
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401 - part of the fixed overhead

    from xgblora_engine.export import export_run
    from xgblora_engine.export import streamed as S

    if way == "in memory":
        def refuse(*args, **kwargs):
            raise S.CannotStream("measured in memory")

        S.open_streamed = refuse
    process = psutil.Process()
    overhead = process.memory_info().rss
    stages: dict[str, dict] = {}  # stage -> highest RSS seen in it, and the peak so far when last seen

    def progress(fmt, stage, fraction):
        entry = stages.setdefault(stage, {"rss": 0, "peak_so_far": 0})
        entry["rss"] = max(entry["rss"], process.memory_info().rss)
        entry["peak_so_far"] = peak_rss()

    log: list[str] = []
    start = time.perf_counter()
    [result] = export_run(run, out, ["hf"], max_new_tokens=MAX_NEW_TOKENS, progress=progress, log=log.append)
    return {"way": way, "peak_rss": peak_rss(), "overhead_rss": overhead,
            "peak_before_verifying": stages["verifying in the target runtime"]["peak_so_far"],
            "seconds": round(time.perf_counter() - start, 1),
            "merge_log": next((line for line in log if "merg" in line), ""), "stages": stages,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in result.checks}}


def peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure_in_child(run: Path, out: Path, way: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([sys.executable, "-m", "benchmarks.export_memory", "--one",
                            json.dumps({"run": str(run), "out": str(out), "way": way})],
                           capture_output=True, text=True, env=env, cwd=ROOT)
    if child.returncode != 0:
        raise RuntimeError(f"the {way} export failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def run_in_child(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def memory_allows_in_memory(weights_bytes: int) -> bool:
    """The in-memory export holds the base in fp32 (twice the bf16 bytes) and reloads it."""
    import psutil

    return psutil.virtual_memory().available > 2 * weights_bytes * 1.5 + 2e9


# --- the whole benchmark --------------------------------------------------------------
def benchmark(sizes: list[int], shard: str, keep: bool) -> dict:
    rows = []
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        for gb in sizes:
            rows += measure_size(gb, shard, in_memory_too=gb == min(sizes))
    finally:
        if not keep:
            shutil.rmtree(WORK, ignore_errors=True)
    return {"shard": shard, "max_new_tokens": MAX_NEW_TOKENS, "target_ratio": TARGET_RATIO,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}


def measure_size(gb: int, shard: str, in_memory_too: bool) -> list[dict]:
    layers = LAYERS_FOR_GB[gb]
    model = WORK / f"llama-{gb}gb"
    print(f"building a {gb} GB model ({layers} layers) in {model}", flush=True)
    run_in_child(f"from benchmarks.export_memory import build_model; from pathlib import Path; "
                 f"build_model(Path({str(model)!r}), {layers}, {shard!r})")
    run = fake_run(model, WORK / f"run-{gb}gb", layers)
    weights, largest, shards = on_disk(model)
    ways = ["streamed"] + (["in memory"] if in_memory_too and memory_allows_in_memory(weights) else [])
    rows = []
    for way in ways:
        out = WORK / f"export-{gb}gb-{way.replace(' ', '-')}"
        print(f"exporting {model.name} {way}", flush=True)
        row = measure_in_child(run, out, way)
        row.update(model=f"{gb} GB", layers=layers, weights_bytes=weights, largest_shard=largest, shards=shards)
        row["within_target"] = row["peak_rss"] <= TARGET_RATIO * largest + row["overhead_rss"]
        rows.append(row)
        print(f"  peak RSS {row['peak_rss'] / 1e9:.2f} GB, overhead {row['overhead_rss'] / 1e9:.2f} GB, "
              f"{row['seconds']} s", flush=True)
        for folder in out.parent.glob(out.name + "*"):  # the export, or its FAILED-VERIFICATION folder
            shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(model, ignore_errors=True)
    return rows


def table(result: dict) -> str:
    gb = 1e9
    lines = [f"Peak RSS of an `hf` export (verification included, greedy answers cut at "
             f"{result['max_new_tokens']} tokens), synthetic llama models saved as bf16 safetensors in "
             f"{result['shard']} shards; OMP_NUM_THREADS={result['omp_num_threads']}. Overhead: RSS once torch, "
             "transformers and the engine are imported. Target: peak ≤ "
             f"{result['target_ratio']} × largest shard + overhead.", "",
             "| model | shards | largest shard GB | merge | peak RSS GB | of which writing GB | overhead GB "
             "| peak − overhead GB | (peak − overhead) / largest shard | within target | seconds |",
             "|:--|--:|--:|:--|--:|--:|--:|--:|--:|:--|--:|"]
    for r in result["rows"]:
        extra = r["peak_rss"] - r["overhead_rss"]
        lines.append(f"| {r['model']} ({r['weights_bytes'] / gb:.2f} GB, {r['layers']} layers) | {r['shards']} "
                     f"| {r['largest_shard'] / gb:.2f} | {r['way']} | {r['peak_rss'] / gb:.2f} "
                     f"| {r['peak_before_verifying'] / gb:.2f} | {r['overhead_rss'] / gb:.2f} | {extra / gb:.2f} "
                     f"| {extra / r['largest_shard']:.2f} | {'yes' if r['within_target'] else 'no'} "
                     f"| {r['seconds']:.0f} |")
    failed = sorted({name for r in result["rows"] for name, c in r["checks"].items() if not c["ok"]})
    lines += ["", "\"of which writing\": the peak before verification began. Checks that failed (on random "
              "weights a model never ends its turn): " + (", ".join(failed) or "none") + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2,4", help="model sizes in GB, among 2 and 4")
    parser.add_argument("--shard", default="500MB", help="the base's shard size")
    parser.add_argument("--keep", action="store_true", help="keep the models and runs in " + str(WORK))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single measurement, in a child process
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(measure(Path(spec["run"]), Path(spec["out"]), spec["way"])))
        return
    result = benchmark([int(s) for s in args.sizes.split(",")], args.shard, args.keep)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export_memory.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "export_memory.md").write_text(table(result), encoding="utf-8")
    print(table(result))


if __name__ == "__main__":
    main()
