"""Entry script of the PyInstaller bundle: the same entry point as `xgblora-studio`."""

import sys

from xgblora_app.__main__ import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
