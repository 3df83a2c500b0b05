"""How the outside world steers a run between optimizer steps.

Kept free of torch so the worker (which the app imports to start processes) can define
its control without loading the training stack.
"""

from __future__ import annotations


class RunControl:
    """No-op by default: a run that nobody steers trains to the end."""

    def should_stop(self, step: int) -> bool:
        """Asked before optimizer step ``step`` (0-based) starts."""
        return False

    def wait_if_paused(self) -> None:
        return None
