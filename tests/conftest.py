"""Shared fixtures: tiny models built from a config, so most tests need no download."""

import os
import sys

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N runs N workers: one thread each (and in every process a test starts),
    # or N torch processes at full width slow each other down many times over
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


class _CurrentStderr:
    """Whatever sys.stderr is now: pytest swaps it per test and closes the old one."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory):
    """A run started without --out (by a test, or a CLI process it spawns) goes to the
    runs folder under XDG_DATA_HOME: a temporary one, never the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    yield
    patch.undo()


@pytest.fixture(autouse=True, scope="session")
def _library_logs_follow_stderr():
    """transformers binds its log handler to the sys.stderr of the moment it first logs;
    under pytest that stream is closed by a later test, and a warning then prints
    "--- Logging error ---" with a traceback into the next test's captured stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # configures the handler
    handler = hf_logging._default_handler
    handler.setStream(_CurrentStderr())
    handler.flush = _CurrentStderr().flush
    yield


def build_tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_llama():
    return build_tiny_llama()


TINY_LAYERS = 3
TINY_FAMILIES = ("llama", "qwen2", "mistral", "gemma", "phi", "phi3", "gpt2", "gpt_neox")


def tiny_config(family: str):
    """A config of ``family`` small enough for a model under 1 MB (3 layers, hidden 32)."""
    import transformers as tf

    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=TINY_LAYERS,
                  num_attention_heads=4, max_position_embeddings=64)
    configs = {
        "llama": lambda: tf.LlamaConfig(**common, num_key_value_heads=2),
        "qwen2": lambda: tf.Qwen2Config(**common, num_key_value_heads=2),
        "mistral": lambda: tf.MistralConfig(**common, num_key_value_heads=2),
        "gemma": lambda: tf.GemmaConfig(**common, num_key_value_heads=2, head_dim=8),
        "phi": lambda: tf.PhiConfig(**common),
        "phi3": lambda: tf.Phi3Config(**common, num_key_value_heads=2, pad_token_id=0),
        "gpt2": lambda: tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=TINY_LAYERS, n_head=4, n_positions=64,
                                       bos_token_id=0, eos_token_id=0),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**common),
    }
    return configs[family]()


def build_tiny(family: str):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(family)).eval()


@pytest.fixture(params=TINY_FAMILIES)
def tiny_models(request):
    """(family, tiny fp32 model), once per family; narrow it with
    ``@pytest.mark.parametrize("tiny_models", ["gpt2"], indirect=True)``."""
    return request.param, build_tiny(request.param)
