"""Entry point of `xgblora-studio` and `python -m xgblora_app`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import multiprocessing

    # In a frozen bundle the worker is spawned by re-running this executable: this call
    # turns such a re-run into the worker instead of a second window. No-op otherwise.
    multiprocessing.freeze_support()
    from xgblora_app.main_window import run_app

    return run_app(sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
