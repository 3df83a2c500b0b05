from tests.engine.conftest import tiny_data, tiny_model_dir  # noqa: F401  (shared fixtures)
