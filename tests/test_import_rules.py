"""The process boundary is also an import boundary: the app never loads torch, the
engine never loads Qt. Checked in fresh interpreters so nothing is already imported."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "accelerate", "bitsandbytes", "peft")
QT = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["xgblora_app", "xgblora_app.main_window", "xgblora_engine.protocol",
                                    "xgblora_engine.config", "xgblora_engine"])
def test_light_modules_load_no_torch(module):
    assert not loaded_after(f"import {module}") & set(HEAVY)


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_qt():
    for path in (ROOT / "xgblora_engine").rglob("*.py"):
        assert not imported_names(path) & set(QT), path


def test_app_never_imports_torch():
    for path in (ROOT / "xgblora_app").rglob("*.py"):
        assert not imported_names(path) & set(HEAVY), path
