"""An export is all or nothing: interrupted or killed, out of disk space, or with a file
that does not reload as the merged model, it never leaves something that looks complete."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from xgblora_engine.errors import UserError
from xgblora_engine.export import export_run
from xgblora_engine.export import hf as H


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("formats", [["hf"], ["peft", "hf"]])
def test_interrupted_export_leaves_nothing(tiny_run, tmp_path, monkeypatch, formats):
    original = H.write_hf

    def write_then_interrupt(model, tokenizer, folder, *args, **kwargs):
        original(model, tokenizer, folder, *args, **kwargs)
        assert (folder / "config.json").is_file()  # the files were there, under the hidden name
        raise KeyboardInterrupt

    monkeypatch.setattr(H, "write_hf", write_then_interrupt)
    exports = tmp_path / "exports"
    exports.mkdir()
    with pytest.raises(KeyboardInterrupt):
        export_run(tiny_run, exports / "merged", formats)
    assert leftovers(exports) == []


def test_killed_export_leaves_no_folder_under_the_final_name(tiny_run, tmp_path):
    """SIGKILL in the middle of writing: the final name never appears; only a hidden
    `.NAME.partial-*` folder can remain."""
    exports = tmp_path / "exports"
    exports.mkdir()
    script = textwrap.dedent(f"""
        import os, signal
        from xgblora_engine.export import export_run

        def progress(fmt, stage, fraction):
            if fmt == "hf" and stage.startswith("writing safetensors") and fraction == 1.0:
                os.kill(os.getpid(), signal.SIGKILL)

        export_run({str(tiny_run)!r}, {str(exports / "merged")!r}, ["hf"], progress=progress, shard_size="4MB")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=os.getcwd())
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    names = leftovers(exports)
    assert "merged" not in names
    assert names and all(n.startswith(".merged.partial-") for n in names)
    partial = exports / names[0]
    assert (partial / "model.safetensors.index.json").is_file()  # it was killed after writing
    # a new export into the same place works
    [again] = export_run(tiny_run, exports / "merged", ["hf"], verify=False)
    assert again.ok and (exports / "merged" / "config.json").is_file()


def test_no_disk_space_is_reported_before_loading_anything(tiny_run, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import xgblora_engine.export.run as R

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5 * 10**6, 5 * 10**6))

    def must_not_load(*a, **k):
        raise AssertionError("the model was loaded before the disk check")

    monkeypatch.setattr(R, "load_base", must_not_load)
    with pytest.raises(UserError, match="not enough free disk space") as info:
        export_run(tiny_run, tmp_path / "merged", ["hf", "gguf"])
    assert "5 MB are free" in info.value.message and "hf" in info.value.message
    assert "choose another --out" in info.value.hint
    assert leftovers(tmp_path) == ["run"]


def test_refuses_a_non_empty_out_folder(tiny_run, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        export_run(tiny_run, tmp_path / "taken", ["hf"])
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def corrupt_tensor(path, name, value=7.0):
    """Overwrite one tensor's first values in a safetensors file, in place."""
    import json
    import struct

    with open(path, "r+b") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        start, _ = header[name]["data_offsets"]
        fh.seek(8 + n + start)
        fh.write(struct.pack("<8f", *([value] * 8)))


def test_corrupted_file_fails_verification_and_says_what_differed(tiny_run, tmp_path, monkeypatch):
    original = H.write_hf

    def write_then_corrupt(model, tokenizer, folder, *args, **kwargs):
        original(model, tokenizer, folder, *args, **kwargs)
        corrupt_tensor(folder / "model.safetensors", "model.layers.0.self_attn.q_proj.weight")

    monkeypatch.setattr(H, "write_hf", write_then_corrupt)
    [result] = export_run(tiny_run, tmp_path / "merged", ["hf"])
    assert not result.ok
    assert not (tmp_path / "merged").exists()
    assert result.path == str(tmp_path / "merged.FAILED-VERIFICATION")
    assert (tmp_path / "merged.FAILED-VERIFICATION" / "config.json").is_file()
    failed = {c.name: c.detail for c in result.checks if not c.ok}
    assert "model.layers.0.self_attn.q_proj.weight" in failed["weights"]
    assert "max |Δlogit|" in failed["logits"]
    assert result.message.startswith("verification failed: weights:")
    card = (tmp_path / "merged.FAILED-VERIFICATION" / "README.md").read_text()
    assert "**weights** — FAILED" in card


def test_corrupted_adapter_fails_verification(tiny_run, tmp_path, monkeypatch):
    import xgblora_engine.export.peft as PF

    original = PF.write_peft

    def write_then_corrupt(folder, *args, **kwargs):
        original(folder, *args, **kwargs)
        corrupt_tensor(folder / "adapter_model.safetensors",
                       "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight", 3.0)

    monkeypatch.setattr(PF, "write_peft", write_then_corrupt)
    [result] = export_run(tiny_run, tmp_path / "adapter", ["peft"])
    assert not result.ok
    failed = {c.name: c.detail for c in result.checks if not c.ok}
    assert "model.layers.0.mlp.down_proj: loaded factors differ" in failed["load with PEFT"]
    assert "logits" in failed


def test_generation_config_without_end_of_turn_is_caught(tiny_run, tmp_path, monkeypatch):
    """The classic 'exported model rambles' bug: eos is not the end-of-turn token."""
    original = H.prepare_for_saving

    def wrong_eos(model, tokenizer):
        original(model, tokenizer)
        model.generation_config.eos_token_id = 1  # <|im_start|>

    monkeypatch.setattr(H, "prepare_for_saving", wrong_eos)
    [result] = export_run(tiny_run, tmp_path / "merged", ["hf"])
    failed = {c.name: c.detail for c in result.checks if not c.ok}
    assert "lacks end-of-turn ids" in failed["generation config"]
    assert "does not end answers the merged model ends" in failed["stops at end of turn"]
