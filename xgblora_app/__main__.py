"""Entry point of `xgblora-studio` and `python -m xgblora_app`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from xgblora_app.main_window import run_app

    return run_app(sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
