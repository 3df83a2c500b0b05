"""llama.cpp's own HF → GGUF converter, obtained at run time and cached.

``convert_hf_to_gguf.py`` (with its ``conversion`` package and its bundled, newer
``gguf-py``) is llama.cpp's code, MIT-licensed, and not shipped with this project. It is
taken from the llama-cpp-python source distribution on PyPI, which vendors llama.cpp:

1. ``XGBLORA_LLAMA_CPP``: a llama.cpp checkout (or any folder holding
   ``convert_hf_to_gguf.py``, ``conversion/`` and ``gguf-py/``) is used as it is;
2. the cache, ``<user cache dir>/xgblora-studio/llama.cpp/llama-cpp-python-<version>/``;
3. otherwise the sdist is fetched once with ``pip download --no-binary :all: --no-deps
   llama-cpp-python==<version>`` (or read from ``XGBLORA_LLAMA_CPP_SDIST``, a local
   ``.tar.gz``), its sha256 is checked against the pinned one, and only the converter's
   files are unpacked into the cache.

``<version>`` is that of the installed llama-cpp-python when there is one (the converter
then matches the runtime that verifies its output), else :data:`PINNED_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from xgblora_engine.errors import UserError

PINNED_VERSION = "0.3.36"
# sha256 of the sdists on PyPI whose converter was tested here: an archive that differs is
# refused before any file of it is unpacked. (A runtime of another version installed by the
# user brings its own converter version, unpinned: pip checked PyPI's hash as it fetched it.)
SDIST_SHA256 = {"0.3.36": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"}
SECONDS_PER_GB = 300  # the converter's time limit per GB of weights (it takes ~20 s/GB here)
MIN_SECONDS = 600
ENV_DIR = "XGBLORA_LLAMA_CPP"
ENV_SDIST = "XGBLORA_LLAMA_CPP_SDIST"
NEEDED = ("convert_hf_to_gguf.py", "conversion", "gguf-py")
KEEP = NEEDED + ("LICENSE",)


def runtime_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def cache_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("xgblora-studio", appauthor=False)) / "llama.cpp"


def is_complete(folder: Path) -> bool:
    return (folder / NEEDED[0]).is_file() and all((folder / n).is_dir() for n in NEEDED[1:])


def converter_dir(log=lambda _: None) -> Path:
    """The folder holding convert_hf_to_gguf.py, fetching it on first use."""
    env = os.environ.get(ENV_DIR)
    if env:
        folder = Path(env).expanduser()
        if not is_complete(folder):
            raise UserError(f"{ENV_DIR}={folder} does not hold llama.cpp's converter",
                            "point it at a llama.cpp checkout (with convert_hf_to_gguf.py, conversion/ "
                            "and gguf-py/), or unset it to let the converter be fetched")
        return folder
    version = runtime_version() or PINNED_VERSION
    folder = cache_root() / f"llama-cpp-python-{version}"
    if is_complete(folder):
        return folder
    sdist = os.environ.get(ENV_SDIST)
    with tempfile.TemporaryDirectory(prefix="xgblora-llama-cpp-") as tmp:
        if sdist:
            archive = Path(sdist).expanduser()
            if not archive.is_file():
                raise UserError(f"{ENV_SDIST}={archive} is not a file",
                                "give the path of a llama_cpp_python-<version>.tar.gz source archive")
        else:
            log(f"fetching llama.cpp's GGUF converter (llama-cpp-python {version} source, ~75 MB, once)")
            archive = download_sdist(version, Path(tmp))
        check_sdist(archive, version, log)
        unpack(archive, folder)
    log(f"GGUF converter cached in {folder}")
    return folder


def download_sdist(version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
           "--disable-pip-version-check", "--quiet", f"llama-cpp-python=={version}", "-d", str(dest)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        result = None
        reason = str(exc)
    else:
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["pip failed"]
        reason = reason[0]
    found = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if result is None or result.returncode != 0 or not found:
        raise UserError(
            f"the GGUF converter (llama.cpp's convert_hf_to_gguf.py) is not cached and could not be "
            f"downloaded: {reason}",
            f"connect to the internet once and retry (it is cached after that), or download "
            f"llama_cpp_python-{version}.tar.gz elsewhere (`pip download --no-binary :all: --no-deps "
            f"llama-cpp-python=={version}`) and set {ENV_SDIST} to it, or set {ENV_DIR} to a llama.cpp checkout")
    return found[0]


def check_sdist(archive: Path, version: str, log=lambda _: None) -> None:
    """Refuse an archive whose sha256 is not the pinned one for its version."""
    digest = hashlib.sha256()
    with open(archive, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    expected = SDIST_SHA256.get(version)
    if expected is None:
        log(f"no pinned sha256 for llama-cpp-python {version} (the installed runtime's version): "
            f"using {archive.name} as fetched")
    elif digest.hexdigest() != expected:
        raise UserError(f"{archive} is not llama-cpp-python {version}'s source archive as published on PyPI: "
                        f"its sha256 is {digest.hexdigest()}, the pinned one is {expected}",
                        f"remove it, then export again to fetch it from PyPI, or set {ENV_SDIST} to the file "
                        f"`pip download --no-binary :all: --no-deps llama-cpp-python=={version}` gives")


def unpack(archive: Path, folder: Path) -> None:
    """Extract only <top>/vendor/llama.cpp/{convert_hf_to_gguf.py, conversion, gguf-py, LICENSE},
    into a temporary folder renamed into place (two processes racing both end up complete)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if len(parts) > 3 and parts[1:3] == ("vendor", "llama.cpp") and parts[3] in KEEP:
                    if not (m.isfile() or m.isdir()):
                        continue  # no links or devices from an archive
                    m.name = str(Path(*parts[3:]))
                    members.append(m)
            if not members:
                raise UserError(f"{archive} does not contain llama.cpp's converter",
                                "use a llama-cpp-python source archive (.tar.gz from PyPI)")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.10.12: names were checked above (no absolute paths or '..')
                if any(".." in Path(m.name).parts or Path(m.name).is_absolute() for m in members):
                    raise UserError(f"{archive} has unsafe paths", "use the archive from PyPI")
                tar.extractall(staging, members=members)  # noqa: S202
        if not is_complete(staging):
            raise UserError(f"{archive} lacks part of llama.cpp's converter",
                            "use a complete llama-cpp-python source archive")
        try:
            os.replace(staging, folder)
        except OSError:
            if not is_complete(folder):  # not a lost race with another process
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not is_complete(folder):
        raise UserError(f"could not set up the GGUF converter in {folder}", "check that the cache folder is writable")


def run_converter(hf_folder: str | Path, outfile: Path, outtype: str, log=lambda _: None,
                  model_name: str | None = None) -> None:
    """``convert_hf_to_gguf.py HF_FOLDER --outtype T --outfile F [--metadata NAMING]`` with the
    converter's own gguf-py first on the path (the PyPI ``gguf`` is older than the converter
    needs), stopped if it runs past a limit set by the weights' size. Without a name the
    converter would name the model after ``HF_FOLDER``, a temporary folder."""
    folder = converter_dir(log)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder / "gguf-py"), str(folder)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("NO_LOCAL_GGUF", None)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, str(folder / "convert_hf_to_gguf.py"), str(hf_folder),
           "--outtype", outtype, "--outfile", str(outfile)]
    naming = outfile.with_name(outfile.name + ".metadata.json")
    if model_name:  # else the name and "finetune" would be taken from the folder's name
        naming.write_text(json.dumps({"general.name": model_name, "general.finetune": "xgblora"}), encoding="utf-8")
        cmd += ["--metadata", str(naming)]
    limit = time_limit(hf_folder)
    try:
        result = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        outfile.unlink(missing_ok=True)
        raise UserError(f"llama.cpp's GGUF converter did not finish within {limit // 60} minutes and was stopped",
                        "check that the disk is not full or very slow, then export again; --format hf and peft "
                        "do not need the converter") from None
    finally:
        naming.unlink(missing_ok=True)
    if result.returncode != 0 or not outfile.is_file():
        output = result.stderr + result.stdout
        log("convert_hf_to_gguf.py failed; its last lines:\n" + "\n".join(output.strip().splitlines()[-15:]))
        raise UserError(*explain_failure(output))


def time_limit(hf_folder: str | Path) -> int:
    """Seconds the converter may take: generous for the size of the weights it reads."""
    gb = sum(f.stat().st_size for f in Path(hf_folder).glob("*.safetensors")) / 1e9
    return max(MIN_SECONDS, int(gb * SECONDS_PER_GB))


def explain_failure(output: str) -> tuple[str, str]:
    last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["no output"]
    if "BPE pre-tokenizer was not recognized" in output:
        return ("llama.cpp's converter does not know this model's tokenizer (BPE pre-tokenizer not recognized)",
                f"a newer llama.cpp may: set {ENV_DIR} to an up-to-date llama.cpp checkout")
    if "No module named 'sentencepiece'" in output:
        return ("llama.cpp's converter needs the sentencepiece package",
                "install it: pip install sentencepiece")
    if "No module named" in output:
        return (f"llama.cpp's converter is missing a Python package: {last[0]}",
                "install the package it names, then export again")
    if "not supported" in output and "Model" in output:
        return (f"llama.cpp cannot convert this architecture: {last[0]}",
                "export --format hf or peft instead, or use a newer llama.cpp via " + ENV_DIR)
    return (f"GGUF conversion failed: {last[0]}", "the converter's last lines are shown above; --format hf and peft do not need it")
