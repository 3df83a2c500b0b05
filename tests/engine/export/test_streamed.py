"""The streamed hf export (export/streamed.py) writes, tensor by tensor from the base's
safetensors, exactly the files the in-memory merge writes; it refuses what it cannot write
that way (the export then merges in memory and says why), and a failure half-way leaves no
finished export."""

import filecmp
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.engine.export.conftest import make_run, merge_in_memory
from xgblora_engine.boosting.ledger import BoosterLedger, RoundRecord
from xgblora_engine.config import RunConfig, load_config_file, save_config
from xgblora_engine.errors import UserError
from xgblora_engine.export import export_run
from xgblora_engine.export import streamed as S

WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


def export_both_ways(run, tmp_path, monkeypatch, **kwargs):
    """(streamed folder, in-memory folder, the streamed export's log and result)."""
    log = []
    [streamed] = export_run(run, tmp_path / "streamed", ["hf"], log=log.append, **kwargs)
    assert streamed.ok, streamed.message
    merge_in_memory(monkeypatch)
    [memory] = export_run(run, tmp_path / "memory", ["hf"], **kwargs)
    assert memory.ok, memory.message
    return tmp_path / "streamed", tmp_path / "memory", log, streamed


def saved_tensors(folder):
    tensors = {}
    for shard in sorted(folder.glob("model*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def assert_same_checkpoint(streamed, memory):
    """Every tensor bit-identical, and the weight and config files byte-identical."""
    mine, theirs = saved_tensors(streamed), saved_tensors(memory)
    assert mine.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert mine[name].dtype == tensor.dtype and torch.equal(mine[name].view(torch.uint8),
                                                                 tensor.view(torch.uint8)), name
    shards = sorted(p.name for p in memory.glob("model*.safetensors"))
    assert shards == sorted(p.name for p in streamed.glob("model*.safetensors"))
    for name in [*shards, *WEIGHT_FILES]:
        assert (memory / name).is_file() == (streamed / name).is_file(), name
        if (memory / name).is_file():
            assert filecmp.cmp(memory / name, streamed / name, shallow=False), name


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_streamed_export_is_what_the_in_memory_merge_writes(tiny_run, tmp_path, monkeypatch, dtype):
    streamed, memory, log, result = export_both_ways(tiny_run, tmp_path, monkeypatch, dtype=dtype,
                                                     shard_size="4MB")
    assert any("merging shard by shard" in line and "(streamed)" in line for line in log)
    assert len(list(streamed.glob("model-*.safetensors"))) > 1  # sharded output, with its index
    assert_same_checkpoint(streamed, memory)
    checks = {c.name: c.detail for c in result.checks}
    assert "its weights left on disk" in checks["reload with transformers"]
    # the reference is the merged model in the base's dtype (fp32), its weights left on disk too
    assert "vs the fp32 merged model" in checks["logits"]
    if dtype == "fp32":
        assert checks["logits"].startswith("max |Δlogit| 0 ")


def test_a_sharded_bf16_base_with_an_index(tiny_chat_dir, chat_tokenizer, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_chat_dir, dtype=torch.bfloat16).save_pretrained(
        base, max_shard_size="2MB")
    chat_tokenizer.save_pretrained(base)
    assert len(json.loads((base / S.INDEX_FILE).read_text())["weight_map"]) > 0
    assert len(list(base.glob("model-*.safetensors"))) > 1  # and one output file: read across base shards
    run = make_run(base, tmp_path / "run")
    streamed, memory, _, _ = export_both_ways(run, tmp_path, monkeypatch)
    assert_same_checkpoint(streamed, memory)
    assert {t.dtype for t in saved_tensors(streamed).values()} == {torch.bfloat16}


def test_tied_embeddings_are_written_once(tiny_run, tmp_path):
    from transformers import AutoModelForCausalLM

    [result] = export_run(tiny_run, tmp_path / "out", ["hf"])
    assert result.ok, result.message
    tensors = saved_tensors(tmp_path / "out")
    assert "model.embed_tokens.weight" in tensors and "lm_head.weight" not in tensors
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_an_update_to_a_tied_weight_is_merged_in_memory(tiny_chat_dir, tmp_path):
    run = make_run(tiny_chat_dir, tmp_path / "run")
    ledger = BoosterLedger.load(run / "ledger.safetensors")
    g = torch.Generator().manual_seed(1)
    vocab, hidden = load_file(str(tiny_chat_dir / "model.safetensors"))["model.embed_tokens.weight"].shape
    ledger.record_round(RoundRecord(round=4, step=20, layers=[1]),
                        {"lm_head": (torch.randn(1, hidden, generator=g), torch.zeros(vocab, 1), 1.0)})
    ledger.save(run / "ledger.safetensors")
    log = []
    [result] = export_run(run, tmp_path / "out", ["hf"], verify=False, log=log.append)
    assert result.ok
    assert any("in memory" in line and "lm_head.weight is not saved on its own" in line for line in log)


def test_a_tensor_the_ledger_does_not_touch_is_copied_unchanged(tiny_chat_dir, tmp_path):
    run = make_run(tiny_chat_dir, tmp_path / "run", rounds=((0,), (0,)))  # layer 1 never boosted
    [result] = export_run(run, tmp_path / "out", ["hf"], verify=False)
    assert result.ok
    base = load_file(str(tiny_chat_dir / "model.safetensors"))
    out = saved_tensors(tmp_path / "out")
    ledger = BoosterLedger.load(run / "ledger.safetensors")
    updated = {f"{m}.weight" for m in ledger.modules()}
    assert updated and all(".layers.0." in name for name in updated)
    for name, tensor in out.items():
        if name in updated:
            assert torch.equal(tensor, base[name] + ledger.delta(name.removesuffix(".weight"))), name
        else:
            assert torch.equal(tensor, base[name]), name


def test_a_failure_half_way_leaves_no_finished_export(tiny_run, tmp_path, monkeypatch):
    original = S.StreamedMerge.merged_tensor
    made = []

    def fail_on_the_fifth(self, name):
        made.append(name)
        if len(made) == 5:
            raise OSError("read error in the middle of a shard")
        return original(self, name)

    monkeypatch.setattr(S.StreamedMerge, "merged_tensor", fail_on_the_fifth)
    exports = tmp_path / "exports"
    exports.mkdir()
    with pytest.raises(OSError, match="read error"):
        export_run(tiny_run, exports / "merged", ["hf"])
    assert len(made) == 5
    assert list(exports.iterdir()) == []


def test_gpt2_conv1d_weights_take_their_update_transposed(tiny_chat_dir, chat_tokenizer, tmp_path, monkeypatch):
    """GPT-2's Conv1D stores its weight in×out; the ledger's update is out×in."""
    from tests.conftest import build_tiny

    base = tmp_path / "gpt2"
    build_tiny("gpt2").save_pretrained(base)
    chat_tokenizer.save_pretrained(base)
    run = make_run(tiny_chat_dir, tmp_path / "run")  # its config and ledger then made GPT-2's
    cfg = RunConfig.from_dict(load_config_file(run / "config.yaml"))
    cfg.model.name = str(base)
    save_config(cfg, run / "config.yaml")
    g = torch.Generator().manual_seed(0)
    ledger = BoosterLedger()
    ledger.record_round(RoundRecord(round=1, step=5, layers=[0]), {
        "transformer.h.0.attn.c_attn": (torch.randn(2, 32, generator=g), torch.randn(96, 2, generator=g), 0.5),
        "transformer.h.0.mlp.c_fc": (torch.randn(2, 32, generator=g), torch.randn(128, 2, generator=g), 0.5)})
    ledger.save(run / "ledger.safetensors")
    streamed, memory, log, _ = export_both_ways(run, tmp_path, monkeypatch, verify=False)
    assert any("(streamed)" in line for line in log)
    assert_same_checkpoint(streamed, memory)
    w0 = load_file(str(base / "model.safetensors"))["transformer.h.0.attn.c_attn.weight"]
    out = saved_tensors(streamed)["transformer.h.0.attn.c_attn.weight"]
    assert out.shape == w0.shape == (32, 96)
    assert torch.equal(out, w0 + ledger.delta("transformer.h.0.attn.c_attn").t())


def test_other_formats_merge_in_memory_and_say_why(tiny_run, tmp_path):
    log = []
    results = export_run(tiny_run, tmp_path / "out", ["hf", "peft"], verify=False, log=log.append)
    assert all(r.ok for r in results)
    assert any("in memory" in line and "not streamed: peft needs the merged model in memory" in line
               for line in log)


def cfg_for(name):
    cfg = RunConfig()
    cfg.model.name = str(name)
    return cfg


def test_what_cannot_be_streamed_is_named(tiny_chat_dir, tmp_path, monkeypatch):
    ledger = BoosterLedger()
    with pytest.raises(S.CannotStream, match="GGUF"):
        S.open_streamed(cfg_for("default"), ledger, "fp32")
    pickled = tmp_path / "bin"
    pickled.mkdir()
    (pickled / "config.json").write_bytes((tiny_chat_dir / "config.json").read_bytes())
    torch.save(load_file(str(tiny_chat_dir / "model.safetensors")), pickled / "pytorch_model.bin")
    with pytest.raises(S.CannotStream, match="no safetensors weights"):
        S.open_streamed(cfg_for(pickled), ledger, "fp32")
    import xgblora_engine.models.hub as hub

    monkeypatch.setattr(hub, "cached_snapshot", lambda repo_id, need_weights: None)
    with pytest.raises(S.CannotStream, match="not in the local Hugging Face cache"):
        S.open_streamed(cfg_for("someone/some-model"), ledger, "fp32")
    monkeypatch.setattr(hub, "cached_snapshot", lambda repo_id, need_weights: tiny_chat_dir)
    assert S.open_streamed(cfg_for("someone/some-model"), ledger, "fp32").base == tiny_chat_dir


def test_a_base_with_other_tensors_than_the_model_s_is_not_streamed(tiny_chat_dir, tmp_path):
    base = tmp_path / "extra"
    base.mkdir()
    for f in tiny_chat_dir.iterdir():
        if f.name != "model.safetensors":
            (base / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(tiny_chat_dir / "model.safetensors"))
    tensors["model.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(S.CannotStream, match="does not load: model.rotary_emb.inv_freq"):
        S.open_streamed(cfg_for(base), BoosterLedger(), "fp32")


def test_shards_are_laid_out_as_safetensors_lays_them_out(tmp_path):
    """Header and tensor order for every dtype equal save_file's, byte for byte."""
    tensors = {f"t.{dtype}".replace("torch.", ""): torch.arange(6).reshape(2, 3).to(dtype)
               for dtype in S.SAFETENSORS_DTYPES if dtype not in (torch.uint16, torch.uint32, torch.uint64)}
    tensors["a.second.f32"] = torch.ones(1)
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"format": "pt"})
    layout = {name: torch.empty(t.shape, dtype=t.dtype, device="meta") for name, t in tensors.items()}
    specs = {name: layout[name] for name in sorted(layout, key=S.write_order(layout))}
    mine = S.safetensors_header(specs) + b"".join(
        tensors[name].reshape(-1).view(torch.uint8).numpy().tobytes() for name in specs)
    assert mine == (tmp_path / "theirs.safetensors").read_bytes()


@pytest.mark.parametrize("formats,dtype", [(["gguf", "ollama"], "auto"), (["hf", "gguf"], "fp32")])
def test_gguf_and_ollama_are_streamed_into_the_file_the_in_memory_merge_converts(
        tiny_run, tmp_path, monkeypatch, gguf_converter, formats, dtype):
    """The converter reads a streamed fp32 checkpoint (a temporary one, or the hf export's
    when that is fp32), and the file is the one the in-memory merge gives, byte for byte."""
    log = []
    streamed = export_run(tiny_run, tmp_path / "a" / "out", formats, dtype=dtype, quant="q8_0", log=log.append)
    assert all(r.ok for r in streamed), [r.message for r in streamed]
    assert any("(streamed)" in line for line in log)
    assert "temporary fp32" not in " ".join(log) or dtype != "fp32"
    checks = {c.name: c for c in streamed[formats.index("gguf")].checks}
    assert checks["GGUF metadata"].ok and "within q8_0 rounding" in checks["GGUF weights"].detail
    merge_in_memory(monkeypatch)
    memory = export_run(tiny_run, tmp_path / "b" / "out", formats, dtype=dtype, quant="q8_0", verify=False)
    assert all(r.ok for r in memory)  # not verified again: the files are compared byte for byte
    for fmt in ("gguf", "ollama"):
        if fmt in formats:
            mine, theirs = tmp_path / "a" / "out" / fmt, tmp_path / "b" / "out" / fmt
            for name in ["model-q8_0.gguf", *(["Modelfile"] if fmt == "ollama" else [])]:
                assert filecmp.cmp(mine / name, theirs / name, shallow=False), (fmt, name)
    assert not list(tmp_path.glob("*/out-fp32-for-gguf"))  # the temporary checkpoint is gone


class FakeMemory:
    def __init__(self, total, available):
        self.total, self.available = total, available


def test_an_export_that_cannot_fit_in_ram_is_refused_before_anything_is_written(tiny_run, tmp_path, monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: FakeMemory(256 * 2**20, 200 * 2**20))
    with pytest.raises(UserError, match="more than this machine has") as info:
        export_run(tiny_run, tmp_path / "out", ["hf", "peft"], verify=False)
    assert "cannot be streamed: peft needs" in info.value.message and "without peft" in info.value.hint
    assert not (tmp_path / "out").exists()


def test_short_free_ram_is_warned_about_and_the_streamed_need_is_one_tensor(tiny_run, tmp_path, monkeypatch):
    import psutil

    from xgblora_engine.export import run as R

    monkeypatch.setattr(psutil, "virtual_memory", lambda: FakeMemory(64 * 2**30, 100 * 2**20))
    log = []
    [result] = export_run(tiny_run, tmp_path / "out", ["hf"], verify=False, log=log.append)
    assert result.ok
    assert any(line.startswith("warning: only 100 MB of RAM is free") for line in log)
    largest = max(t.numel() for t in load_file(str(tmp_path / "out" / "model.safetensors")).values())
    layout = type("Streamed", (), {"layout": {"w": torch.empty(largest, device="meta")}})()
    need = R.memory_needed(10**9, layout)
    assert need == 12 * largest + R.RUNTIME_BYTES  # one tensor in fp32, three times: not the model's size
