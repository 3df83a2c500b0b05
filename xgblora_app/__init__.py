"""XGBLoRA Studio, the desktop app. A client of the engine worker: never imports torch."""
