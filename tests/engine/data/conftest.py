import pytest


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded model's real tokenizer (ChatML template), loaded without its weights."""
    from xgblora_engine.config import ModelConfig
    from xgblora_engine.models.loading import load_tokenizer

    return load_tokenizer(ModelConfig())
