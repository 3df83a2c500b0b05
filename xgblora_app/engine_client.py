"""The boundary the app codes against: something that runs engine commands in another
process and hands back protocol events. No Qt, no torch.

Two implementations: ``xgblora_engine.worker.WorkerClient`` (the real worker process)
and ``xgblora_app.demo_engine.DemoEngine`` (scripted events, for GUI tests and the
demo mode). The contract, as the app relies on it:

* ``start()`` spawns the worker; its first event is ``Hello``. It may be called again
  after the worker died, to get a fresh one.
* ``send(cmd)`` never blocks. Job commands (``protocol.JOB_COMMANDS``) run one at a
  time and each ends with ``StateChanged("idle")``; a job sent while another runs is
  refused with ``Error(kind="user")``, so the app queues them itself (see
  ``engine_bridge.EngineBridge.submit``). Control commands (Pause, Resume, Stop) act at
  once. Every event carries the ``job_id`` of the command that caused it.
* ``poll()`` returns what has arrived, never waits, and reports the worker's death once
  as ``WorkerExited``.
* ``close()`` sends Shutdown, joins, then terminates the process group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from xgblora_engine import protocol as P


@runtime_checkable
class EngineClient(Protocol):
    def start(self) -> None: ...

    def send(self, command: P.Command) -> None: ...

    def poll(self, max_events: int = 500) -> list[P.Event]: ...

    def is_alive(self) -> bool: ...

    def close(self, timeout: float = 5.0) -> None: ...


ClientFactory = Callable[[], EngineClient]


def worker_client() -> EngineClient:
    """The real worker client; imported here, on first use, so start-up stays light."""
    from xgblora_engine.worker import WorkerClient

    return WorkerClient()
