"""GGUF (llama.cpp's converter) and Ollama exports of the tiny chat model, and how the
converter itself is obtained."""

import io
import tarfile

import pytest

from xgblora_engine.errors import UserError
from xgblora_engine.export import converter as CV
from xgblora_engine.export import export_run
from xgblora_engine.export import gguf as G


def by_name(result):
    return {c.name: c for c in result.checks}


def test_gguf_and_ollama_f16(tiny_run, tmp_path, gguf_converter):
    from gguf import GGUFReader

    results = export_run(tiny_run, tmp_path / "out", ["gguf", "ollama"], quant="f16")
    assert [r.ok for r in results] == [True, True], [r.message for r in results]
    gguf_result, ollama_result = results
    path = tmp_path / "out" / "gguf" / "model-f16.gguf"
    reader = GGUFReader(str(path))
    template = reader.fields["tokenizer.chat_template"].contents()
    assert "<|im_start|>" in template and reader.fields["general.architecture"].contents() == "llama"
    # named after the run, not after the temporary folder the converter read
    assert [reader.fields[f"general.{k}"].contents() for k in ("name", "finetune")] == ["run", "xgblora"]
    checks = by_name(gguf_result)
    assert checks["GGUF metadata"].ok and checks["GGUF weights"].ok
    assert "within f16 rounding" in checks["GGUF weights"].detail
    if G.runtime_available():
        for name in ("llama.cpp tokenization", "llama.cpp logits", "llama.cpp greedy text", "stops at end of turn"):
            assert checks[name].ok and not checks[name].skipped, checks[name]
        assert "3/3 answers token-for-token identical" in checks["llama.cpp greedy text"].detail
    else:
        assert checks["llama.cpp run"].skipped
    # Ollama: the same GGUF plus a Modelfile, and the command to import it
    folder = tmp_path / "out" / "ollama"
    assert (folder / "model-f16.gguf").stat().st_size == path.stat().st_size
    modelfile = (folder / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    assert by_name(ollama_result)["Modelfile template"].ok
    assert ollama_result.command == f"ollama create run -f {folder / 'Modelfile'}"  # named after the run
    assert (folder / "export.json").is_file()


@pytest.mark.parametrize("quant", ["q4_0"])  # every 4- and 5-bit type takes the same path (benchmarks/gguf_types runs all)
def test_gguf_4_and_5_bit_types(tiny_run, tmp_path, gguf_converter, quant):
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFReader, LlamaFileType

    [result] = export_run(tiny_run, None, ["gguf"], quant=quant, into=tmp_path)
    assert result.ok, result.message
    assert result.path == str(tmp_path / f"gguf-{quant}-1")
    assert "within " + quant + " rounding" in by_name(result)["GGUF weights"].detail
    path = tmp_path / f"gguf-{quant}-1" / f"model-{quant}.gguf"
    assert sorted(p.name for p in path.parent.iterdir()) == ["export.json", path.name]  # no f32 file left
    reader = GGUFReader(str(path))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_down.weight"] == T[quant.upper()]
    assert types["token_embd.weight"] == T.Q8_0  # tied: it is also the output projection
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == T.F32
    assert reader.fields["general.file_type"].contents() == LlamaFileType[f"MOSTLY_{quant.upper()}"]
    assert reader.fields["tokenizer.chat_template"].contents()  # the metadata came along


@pytest.mark.skipif(not G.runtime_available(), reason="K-types are made by llama.cpp's quantizer: "
                    "llama-cpp-python (the gguf-runtime extra) is not installed")
def test_gguf_k_quant_by_llama_cpp_s_own_quantizer(tiny_run, tmp_path, gguf_converter):
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFReader, LlamaFileType

    [result] = export_run(tiny_run, tmp_path / "k", ["gguf"], quant="q4_K_M")
    assert result.ok, result.message
    checks = by_name(result)
    assert "within q4_K_M rounding" in checks["GGUF weights"].detail
    assert checks["llama.cpp greedy text"].ok and not checks["llama.cpp greedy text"].skipped
    path = tmp_path / "k" / "model-q4_K_M.gguf"
    assert sorted(p.name for p in path.parent.iterdir()) == ["export.json", path.name]  # no f32 file left
    reader = GGUFReader(str(path))
    assert reader.fields["general.file_type"].contents() == LlamaFileType.MOSTLY_Q4_K_M
    # llama.cpp's own mix: norms stay f32; the tiny model's rows (64 values) are shorter than a
    # K super-block (256), so its quantizer gives them q5_0 and q8_0 instead, as it says
    weights = {t.tensor_type for t in reader.tensors if len(t.shape) == 2}
    assert weights and weights <= {T.Q4_K, T.Q5_K, T.Q6_K, T.Q5_0, T.Q8_0}


def test_a_k_quant_without_llama_cpp_says_how_to_get_it(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(G, "runtime_available", lambda: False)
    with pytest.raises(UserError, match="q5_K_M is made by llama.cpp's own quantizer") as info:
        export_run(tiny_run, tmp_path / "k", ["ollama"], quant="q5_K_M")
    assert "gguf-runtime" in info.value.hint and "q4_0" in info.value.hint
    assert not (tmp_path / "k").exists()
    [hf] = export_run(tiny_run, tmp_path / "hf", ["hf"], quant="q5_K_M", verify=False)  # no GGUF asked: fine
    assert hf.ok


def test_corrupted_gguf_is_caught(tiny_run, tmp_path, gguf_converter, monkeypatch):
    import numpy as np
    from gguf import GGUFReader

    original = G.convert

    def convert_then_corrupt(hf_folder, outfile, quant, log=lambda _: None, name=None):
        original(hf_folder, outfile, quant, log, name)
        reader = GGUFReader(str(outfile))
        tensor = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
        offset = int(tensor.data_offset)
        del reader
        with open(outfile, "r+b") as fh:
            fh.seek(offset)
            fh.write(np.full(64, 20.0, dtype=np.float16).tobytes())

    monkeypatch.setattr(G, "convert", convert_then_corrupt)
    [result] = export_run(tiny_run, tmp_path / "bad", ["gguf"])
    assert not result.ok and not (tmp_path / "bad").exists()
    failed = {c.name: c.detail for c in result.checks if not c.ok}
    assert "blk.1.ffn_down.weight" in failed["GGUF weights"]


# --- the converter: fetched once, cached, clear when offline --------------------
def fake_sdist(path, extra_link=False):
    """A tar.gz shaped like llama-cpp-python's sdist, with a few files besides the converter."""
    with tarfile.open(path, "w:gz") as tar:
        def add(name, text="x"):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        top = "llama_cpp_python-9.9.9/vendor/llama.cpp"
        add(f"{top}/convert_hf_to_gguf.py", "print('converter')")
        add(f"{top}/conversion/__init__.py")
        add(f"{top}/gguf-py/gguf/__init__.py")
        add(f"{top}/LICENSE", "MIT")
        add(f"{top}/src/llama.cpp", "// not needed")
        add("llama_cpp_python-9.9.9/setup.py")
        if extra_link:
            info = tarfile.TarInfo(f"{top}/conversion/evil")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


def test_converter_is_unpacked_from_a_local_sdist_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(CV.ENV_DIR, raising=False)
    monkeypatch.setattr(CV, "cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr(CV, "runtime_version", lambda: "9.9.9")
    monkeypatch.setenv(CV.ENV_SDIST, str(fake_sdist(tmp_path / "llama_cpp_python-9.9.9.tar.gz", extra_link=True)))
    folder = CV.converter_dir()
    assert folder == tmp_path / "cache" / "llama-cpp-python-9.9.9"
    assert sorted(p.name for p in folder.iterdir()) == ["LICENSE", "conversion", "convert_hf_to_gguf.py", "gguf-py"]
    assert not (folder / "conversion" / "evil").exists()
    monkeypatch.delenv(CV.ENV_SDIST)
    assert CV.converter_dir() == folder  # cached: no download, no sdist needed


def test_a_tampered_sdist_is_refused_before_anything_is_unpacked(tmp_path, monkeypatch):
    monkeypatch.delenv(CV.ENV_DIR, raising=False)
    monkeypatch.setattr(CV, "cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr(CV, "runtime_version", lambda: "9.9.9")
    archive = fake_sdist(tmp_path / "llama_cpp_python-9.9.9.tar.gz")
    monkeypatch.setenv(CV.ENV_SDIST, str(archive))
    monkeypatch.setitem(CV.SDIST_SHA256, "9.9.9", "0" * 64)  # what PyPI would have published
    with pytest.raises(UserError, match="is not llama-cpp-python 9.9.9's source archive as published") as info:
        CV.converter_dir()
    assert "the pinned one is " + "0" * 64 in info.value.message and CV.ENV_SDIST in info.value.hint
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    import hashlib

    CV.SDIST_SHA256["9.9.9"] = hashlib.sha256(archive.read_bytes()).hexdigest()  # the genuine file
    assert CV.is_complete(CV.converter_dir())


def test_the_pinned_version_has_a_pinned_hash():
    assert len(CV.SDIST_SHA256[CV.PINNED_VERSION]) == 64


def test_a_converter_that_hangs_is_stopped_with_a_clear_message(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setattr(CV, "converter_dir", lambda log=None: tmp_path)
    limits = []

    def hang(cmd, timeout=None, **kwargs):
        limits.append(timeout)
        (tmp_path / "out.gguf").write_bytes(b"half")
        raise subprocess.TimeoutExpired(cmd, timeout)

    monkeypatch.setattr(CV.subprocess, "run", hang)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="did not finish within 10 minutes and was stopped"):
        CV.run_converter(tmp_path, tmp_path / "out.gguf", "f16")
    assert limits == [CV.MIN_SECONDS] and not (tmp_path / "out.gguf").exists()


def test_converter_offline_says_how_to_get_it(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.delenv(CV.ENV_DIR, raising=False)
    monkeypatch.delenv(CV.ENV_SDIST, raising=False)
    monkeypatch.setattr(CV, "cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr(CV, "runtime_version", lambda: "9.9.9")

    def offline(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "llama-cpp-python==9.9.9" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies "
                                                       "the requirement llama-cpp-python==9.9.9")

    monkeypatch.setattr(CV.subprocess, "run", offline)
    with pytest.raises(UserError, match="not cached and could not be downloaded") as info:
        CV.converter_dir()
    assert CV.ENV_SDIST in info.value.hint and "pip download --no-binary :all:" in info.value.hint
    assert not (tmp_path / "cache" / "llama-cpp-python-9.9.9").exists()


def test_converter_folder_from_the_environment_must_be_complete(tmp_path, monkeypatch):
    monkeypatch.setenv(CV.ENV_DIR, str(tmp_path))
    with pytest.raises(UserError, match="does not hold llama.cpp's converter"):
        CV.converter_dir()


@pytest.mark.parametrize("output, message", [
    ("NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()",
     "does not know this model's tokenizer"),
    ("ModuleNotFoundError: No module named 'sentencepiece'", "needs the sentencepiece package"),
    ("NotImplementedError: Model FooForCausalLM is not supported", "cannot convert this architecture"),
])
def test_converter_failures_are_explained(output, message):
    text, hint = CV.explain_failure(output)
    assert message in text and hint
