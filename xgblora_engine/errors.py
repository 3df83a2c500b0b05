"""Errors meant for the user: one clear message and what to do about it."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix. The CLI prints it without a traceback."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class Stopped(UserError):
    """A Stop that ended a job before it had anything to keep (a download, say): the run
    it was preparing is "stopped", not "failed"."""
