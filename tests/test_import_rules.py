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
# The engine modules the app may import: the protocol, settings and run folders it
# shares with the engine, and the light rules it must not write a second time (the k
# rule, the schedule, the memory estimate, byte units). Each is checked below to load
# neither torch nor Qt; a module joins this list only if it passes.
APP_MAY_IMPORT = {
    "xgblora_engine", "xgblora_engine.protocol", "xgblora_engine.config", "xgblora_engine.errors",
    "xgblora_engine.control", "xgblora_engine.rundir", "xgblora_engine.fileio", "xgblora_engine.devices",
    "xgblora_engine.worker", "xgblora_engine.boosting.sampling", "xgblora_engine.boosting.schedule",
    "xgblora_engine.memory", "xgblora_engine.memory.estimate", "xgblora_engine.memory.units",
    "xgblora_engine.data.readers", "xgblora_engine.data.formats", "xgblora_engine.data.sample",
    "xgblora_engine.payloads", "xgblora_engine.preflight", "xgblora_engine.scoring",
    "xgblora_engine.runs",
}


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


def engine_modules_imported_by_app() -> dict[str, Path]:
    """Every engine module an app file imports (``from pkg import mod`` counts as pkg.mod)."""
    found = {}
    for path in (ROOT / "xgblora_app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [_module_of(node.module, a.name) for a in node.names]
            else:
                continue
            found.update({name: path for name in names if name.split(".")[0] == "xgblora_engine"})
    return found


def _module_of(package: str, name: str) -> str:
    candidate = ROOT / Path(*f"{package}.{name}".split("."))
    return f"{package}.{name}" if candidate.with_suffix(".py").is_file() or candidate.is_dir() else package


def test_the_app_imports_only_engine_modules_on_the_allow_list():
    outside = {name: str(path.relative_to(ROOT)) for name, path in engine_modules_imported_by_app().items()
               if name not in APP_MAY_IMPORT}
    assert not outside, f"the app imports engine modules that are not on APP_MAY_IMPORT: {outside}"


@pytest.mark.parametrize("module", sorted(APP_MAY_IMPORT))
def test_engine_modules_the_app_may_import_load_neither_torch_nor_qt(module):
    assert not loaded_after(f"import {module}") & set(HEAVY + QT)
