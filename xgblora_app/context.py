"""What every panel is given: the engine bridge, the settings being edited, the session
state and the persistent preferences."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QSettings

from xgblora_app.engine_bridge import EngineBridge
from xgblora_app.state.run_settings import RunSettings
from xgblora_app.state.session import Session


@dataclass
class Studio:
    bridge: EngineBridge
    settings: RunSettings
    session: Session
    prefs: QSettings
