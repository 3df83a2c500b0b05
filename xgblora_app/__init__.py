"""XGBLoRA Studio, the desktop app. A client of the engine worker: never imports torch."""

from xgblora_app.qt_compat import immortalize_singletons

immortalize_singletons()  # before any Qt object exists; see qt_compat for why
