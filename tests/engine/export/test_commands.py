"""The command printed with each export is run exactly as printed, from a shell, on the
export it names (in a folder with a space in its name, so the quoting is tested too)."""

import os
import subprocess

import yaml

from xgblora_engine.export import export_run


def run_as_printed(command: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def test_hf_and_peft_commands_run_as_printed(tiny_run, tmp_path):
    into = tmp_path / "my exports"
    results = export_run(tiny_run, None, ["hf", "peft"], into=into, verify=False)
    for r in results:
        assert r.ok and r.command.startswith("python -c "), r
        done = run_as_printed(r.command, tmp_path)
        assert done.returncode == 0, f"{r.format}: {r.command}\n{done.stderr[-3000:]}"


def test_the_peft_command_loads_a_gguf_base_through_transformers(tiny_run, tmp_path, gguf_converter):
    from xgblora_engine.export.converter import run_converter

    base = tmp_path / "base"
    base.mkdir()
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    run_converter(config["model"]["name"], base / "tiny-f32.gguf", "f32")
    config["model"]["name"] = str(base / "tiny-f32.gguf")  # the run was trained on a .gguf base
    (tiny_run / "config.yaml").write_text(yaml.safe_dump(config))
    [peft] = export_run(tiny_run, None, ["peft"], into=tmp_path / "out", verify=False)  # verified elsewhere
    assert peft.ok, peft.message
    assert 'gguf_file="tiny-f32.gguf"' in peft.command
    done = run_as_printed(peft.command, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_gguf_and_ollama_commands_name_the_files_they_use(tiny_run, tmp_path, gguf_converter):
    results = {r.format: r for r in export_run(tiny_run, None, ["gguf", "ollama"], into=tmp_path / "with space",
                                               verify=False)}
    folder = tmp_path / "with space" / "gguf+ollama-f16-1"
    assert results["gguf"].command == f"llama-cli -m '{folder / 'gguf' / 'model-f16.gguf'}' -cnv"
    assert results["ollama"].command == f"ollama create run -f '{folder / 'ollama' / 'Modelfile'}'"
