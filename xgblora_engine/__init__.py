"""XGBLoRA engine: headless fine-tuning by gradient boosting over tiny LoRA boosters.

Never imports Qt. Importing this package (and ``xgblora_engine.protocol``) loads no
torch either: heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
