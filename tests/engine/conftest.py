"""A tiny model folder and dataset on disk: what a real run (and a real worker) loads."""

import json

import pytest

from xgblora_engine.config import RunConfig


def save_tiny_model(path, model):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(125)} | {"<eos>": 125, "<unk>": 126, "<pad>": 127}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_llama):
    return save_tiny_model(tmp_path / "tiny-model", tiny_llama)


@pytest.fixture
def tiny_data(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"instruction": " ".join(f"w{(i * 7 + j) % 100}" for j in range(6)), "output": f"w{i % 50} w{i % 30}"}
            for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture
def tiny_config(tiny_model_dir, tiny_data):
    """A short run on the tiny model: 3 rounds of 2 steps, 2 of 4 layers a round."""
    cfg = RunConfig()
    cfg.model.name, cfg.data.path = str(tiny_model_dir), str(tiny_data)
    cfg.boost.rank, cfg.boost.merge_every, cfg.boost.layers_per_round = 2, 2, 2
    cfg.train.max_steps, cfg.train.lr, cfg.train.batch_size, cfg.train.eval_every = 6, 1e-2, 2, 0
    cfg.data.seq_len = 32
    return cfg


def place_with_hooks(model, device_map: dict[str, str]):
    """Put each named module on its device behind accelerate's AlignDevicesHook, the hook
    ``from_pretrained(device_map=...)`` installs on a model sharded over GPUs. On this
    CPU-only machine the "other GPU" is the meta device: tensors there refuse to mix with
    CPU tensors exactly as a second GPU's would, but hold no values."""
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    for name, device in device_map.items():
        module = model.get_submodule(name).to(device)
        add_hook_to_module(module, AlignDevicesHook(execution_device=device, io_same_device=False))
    return model


def llama_device_map(model, later: str = "cpu") -> dict[str, str]:
    """Embeddings and the lower half of the layers on the CPU, the upper half, the final
    norm and the LM head on ``later``."""
    n = len(model.model.layers)
    placed = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu"}
    placed |= {f"model.layers.{i}": "cpu" if i < n // 2 else later for i in range(n)}
    return placed | {"model.norm": later, "lm_head": later}
