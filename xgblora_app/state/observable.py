"""A minimal publish/subscribe base, so state objects stay free of Qt."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable


class Observable:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable]] = defaultdict(list)

    def subscribe(self, topic: str, fn: Callable) -> None:
        self._subscribers[topic].append(fn)

    def notify(self, topic: str, *args) -> None:
        for fn in list(self._subscribers[topic]):
            fn(*args)
