from tests.engine.conftest import tiny_data, tiny_model_dir  # noqa: F401  (shared fixtures)
from tests.engine.export.conftest import chat_tokenizer, tiny_chat_dir  # noqa: F401  (a tiny chat model)
