"""The merged Hugging Face checkpoint written tensor by tensor, for bases larger than memory.

The in-memory export (export/merged.py) loads the whole base in fp32: an 8B model needs
more than 32 GB of RAM before a byte is written. When the base is a folder of safetensors
(a local folder or a cached Hub snapshot) none of that is needed. Each tensor is read
alone, in its stored dtype; only a tensor the ledger updates is upcast to fp32 and gets
its update exactly as the in-memory merge adds it (``merged.add_update``); every floating
tensor is then cast to the export's dtype and written straight into its output shard,
whose header was computed beforehand. Memory stays at about one tensor, whatever the
model's size.

What is written is what ``save_pretrained`` writes after the in-memory merge, byte for
byte: the same tensor names (tied weights once), the same split into shards, the same
index, config and generation config (tests/engine/export/test_streamed.py compares them).
Where that cannot be promised the export merges in memory and its log says why
(``CannotStream``): a GGUF or ``.bin`` base, a Hub id not in the local cache, a quantized
checkpoint, an architecture transformers converts on load, a base whose tensors are not
exactly the model's, a ledger module whose weight is not saved on its own.

Verification needs no merged model in memory either: the base, with its weights left on
disk and each updated module loading its merged weight when it runs (``reference``), gives
the reference answers; the written checkpoint, loaded the same way (``offloaded``), is
compared with them; the written bytes are compared with fingerprints taken as they were
written (``SavedTensors``).
"""

from __future__ import annotations

import json
import logging
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xgblora_engine.export.common import Progress, dtype_name, release_memory

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = "model{suffix}.safetensors"  # save_pretrained's names: model-00001-of-00003.safetensors

# safetensors' names of the torch dtypes, in the order of its Dtype enum. save_file writes a
# file's tensors by this order, last first, then by name; writing in the same order makes
# our shards byte-identical to the ones save_pretrained writes.
SAFETENSORS_DTYPES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.float8_e5m2: "F8_E5M2",
    torch.float8_e4m3fn: "F8_E4M3", torch.int16: "I16", torch.uint16: "U16", torch.float16: "F16",
    torch.bfloat16: "BF16", torch.int32: "I32", torch.uint32: "U32", torch.float32: "F32",
    torch.float64: "F64", torch.int64: "I64", torch.uint64: "U64",
}
TORCH_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}
WRITE_RANK = {dtype: rank for rank, dtype in enumerate(SAFETENSORS_DTYPES)}


class CannotStream(Exception):
    """Why this export merges in memory instead (the export's log says it)."""


@dataclass
class StreamedMerge:
    """The merged checkpoint still to be written: where each tensor comes from, what it becomes."""

    model: object  # the model on the meta device: config, generation config, names, tied weights
    tokenizer: object
    source: object  # models.source.ModelSource of the base
    base: Path  # the folder of the base's safetensors
    sources: dict[str, Path]  # tensor name -> the base file holding it
    layout: dict[str, torch.Tensor]  # tensor name -> meta tensor (shape, written dtype), in save order
    updates: dict[str, tuple[str, bool]]  # tensor name -> (ledger module, stored in×out)
    ledger: object
    stored_dtype: torch.dtype  # the dtype most of the base's floating tensors are stored in
    take_fingerprints: bool = True  # for the weights check (hashing every byte costs time)
    fingerprints: dict = field(default_factory=dict)  # name -> (shape, dtype, hash) as written

    def write(self, folder: Path, shard_size: str | int, progress: Progress, fmt: str = "hf") -> None:
        """config.json, generation_config.json, the shards and their index, into ``folder``."""
        from huggingface_hub import split_torch_state_dict_into_shards

        write_configs(self.model, folder)
        split = split_torch_state_dict_into_shards(self.layout, filename_pattern=SHARD_PATTERN,
                                                   max_shard_size=shard_size)
        shards = split.filename_to_tensors
        for i, (file, names) in enumerate(shards.items()):
            progress(fmt, "writing safetensors shards", i / len(shards))
            self.write_shard(folder / file, names)
        if split.is_sharded:
            write_index(folder, split, self.model.num_parameters())

    def write_shard(self, path: Path, names: list[str]) -> None:
        """One safetensors file, its header first, then each merged tensor as it is made."""
        from xgblora_engine.export.verify import tensor_fingerprint

        specs = {name: self.layout[name] for name in sorted(names, key=write_order(self.layout))}
        with open(path, "wb") as out:
            out.write(safetensors_header(specs))
            for name in specs:
                tensor = self.merged_tensor(name)
                out.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
                if self.take_fingerprints:
                    self.fingerprints[name] = tensor_fingerprint(tensor)

    def merged_tensor(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor as the in-memory merge and cast make it: an updated weight upcast to fp32
        with its update added, every floating tensor then cast to the export's dtype (or to
        ``dtype``)."""
        from xgblora_engine.export.merged import add_update

        tensor = read_tensor(self.sources[name], name)
        if name in self.updates or (tensor.is_floating_point() and tensor.element_size() > 4):
            tensor = tensor.to(torch.float32)  # the in-memory merge holds every weight in fp32
        if name in self.updates:
            module, fan_in_fan_out = self.updates[name]
            add_update(tensor, self.ledger, module, fan_in_fan_out)
        return tensor.to(dtype or self.layout[name].dtype).contiguous()


# --- can this base be streamed? -------------------------------------------------------
def open_streamed(cfg, ledger, dtype: str) -> StreamedMerge:
    """The streamed merge of the run's base and ledger into an export of ``dtype`` (fp32,
    bf16, fp16). Raises CannotStream when the base cannot be written this way."""
    from xgblora_engine.export.common import SAVE_DTYPES
    from xgblora_engine.export.merged import base_config
    from xgblora_engine.models.loading import load_tokenizer
    from xgblora_engine.models.source import resolve_source

    source = resolve_source(cfg.model.name)
    base = base_folder(source)
    sources = weight_files(base)
    if sources is None:
        raise CannotStream(f"the base in {base} has no safetensors weights")
    stored = tensor_specs(sources)
    export_dtype = getattr(torch, SAVE_DTYPES[dtype])
    model = meta_model(base, export_dtype)
    layout = saved_layout(model, stored, export_dtype)
    updates = ledger_updates(model, ledger, layout)
    tokenizer = load_tokenizer(base_config(cfg), source)
    return StreamedMerge(model, tokenizer, source, base, sources, layout, updates, ledger, most_stored(stored))


def base_folder(source) -> Path:
    if source.gguf_file:
        raise CannotStream("the base is a GGUF file, which is dequantized in memory")
    if source.kind != "hub":
        return Path(source.path)
    from xgblora_engine.models.hub import cached_snapshot

    folder = cached_snapshot(source.path, need_weights=True)
    if folder is None:
        raise CannotStream(f"{source.path} is not in the local Hugging Face cache")
    return folder


def weight_files(folder: Path) -> dict[str, Path] | None:
    """Tensor name -> the safetensors file of ``folder`` that holds it (the single file first,
    as from_pretrained takes it), or None when there is neither a single file nor an index."""
    from safetensors import safe_open

    single, index = folder / SINGLE_FILE, folder / INDEX_FILE
    if single.is_file():
        with safe_open(str(single), framework="pt") as fh:
            return {name: single for name in fh.keys()}
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    return None


def tensor_specs(sources: dict[str, Path]) -> dict[str, tuple[torch.dtype | None, list[int]]]:
    """(stored dtype, shape) of every tensor, read from the files' headers alone."""
    from safetensors import safe_open

    specs = {}
    for file in sorted(set(sources.values())):
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():
                if sources.get(name) == file:
                    view = fh.get_slice(name)
                    specs[name] = (TORCH_DTYPES.get(view.get_dtype()), list(view.get_shape()))
    return specs


def most_stored(specs: dict) -> torch.dtype:
    floating = Counter(dtype for dtype, _ in specs.values() if dtype is not None and dtype.is_floating_point)
    return floating.most_common(1)[0][0] if floating else torch.float32


def meta_model(folder: Path, dtype: torch.dtype):
    """The base's model built from its config on the meta device (no weights read), with the
    generation config from_pretrained would give it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - the in-memory load then reports it, readably
        raise CannotStream(f"its config cannot be read alone ({exc})") from None
    quantization = getattr(config, "quantization_config", None)
    if quantization is not None:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization
        raise CannotStream(f"the base is a quantized checkpoint ({method})")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - as above
        raise CannotStream(f"transformers cannot build the model from its config alone ({exc})") from None
    if model.can_generate():
        model.generation_config = generation_config(folder)
    return model


def generation_config(folder: Path):
    """generation_config.json, else one made from config.json: what from_pretrained loads."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(folder)
    except OSError:
        return GenerationConfig.from_pretrained(folder, config_file_name="config.json", _from_model_config=True)


def saved_layout(model, stored: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """What save_pretrained writes for this model, in its order: name -> meta tensor of the
    written dtype (floating tensors in the export's ``dtype``, others as stored). The base's
    tensors must be exactly these, by name and shape."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    if get_model_conversion_mapping(model, add_legacy=False):
        raise CannotStream(f"transformers converts {type(model).__name__}'s weights when it loads them")
    state = model.state_dict()
    for key in model._keys_to_ignore_on_save or ():
        state.pop(key, None)
    state = remove_tied_weights_from_state_dict(state, model)
    # A model loaded without any weight conversion records none; save_pretrained then still
    # passes the names through revert_weight_conversion, which orders them.
    model._weight_conversions = []
    state = revert_weight_conversion(model, state)
    check_same_tensors(state, stored)
    return {name: torch.empty(meta.shape, dtype=written_dtype(stored[name][0], dtype), device="meta")
            for name, meta in state.items()}


def written_dtype(stored: torch.dtype, export: torch.dtype) -> torch.dtype:
    return export if stored.is_floating_point else stored


def check_same_tensors(state: dict, stored: dict) -> None:
    missing = [name for name in state if name not in stored]
    extra = [name for name in stored if name not in state]
    unknown = [name for name, (dtype, _) in stored.items() if dtype is None]
    reshaped = [name for name, meta in state.items() if name in stored and list(meta.shape) != stored[name][1]]
    for problem, names in (("lacks", missing), ("has tensors the model does not load:", extra),
                           ("stores tensors in a dtype this writer does not know:", unknown),
                           ("has tensors of other shapes than the model's:", reshaped)):
        if names:
            raise CannotStream(f"the base {problem} {', '.join(names[:3])}" + (" …" if len(names) > 3 else ""))


def ledger_updates(model, ledger, layout: dict) -> dict[str, tuple[str, bool]]:
    """Saved weight name -> (ledger module, stored in×out) for every module the ledger updates."""
    from xgblora_engine.boosting.merge import is_fan_in_fan_out
    from xgblora_engine.export.merged import ledger_module

    updates = {}
    for name in ledger.modules():
        module = ledger_module(model, name)
        key = f"{name}.weight"
        if key not in layout:
            raise CannotStream(f"{key} is not saved on its own (a tied weight)")
        updates[key] = (name, is_fan_in_fan_out(module))
    return updates


# --- writing --------------------------------------------------------------------------
def write_configs(model, folder: Path) -> None:
    """What save_pretrained writes besides the weights: the config with the saved dtype and
    the architecture, and the generation config."""
    model.config.dtype = str(model.dtype).split(".")[1]
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    if model.can_generate():
        model.generation_config.save_pretrained(folder)


def write_order(layout: dict):
    """safetensors' order within a file: the dtype last in its enum first, then by name."""
    return lambda name: (-WRITE_RANK[layout[name].dtype], name)


def safetensors_header(specs: dict[str, torch.Tensor]) -> bytes:
    """The header of a safetensors file holding ``specs`` (meta tensors) in this order:
    its length, then the JSON, padded with spaces to 8 bytes as safetensors pads it."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, meta in specs.items():
        size = meta.numel() * meta.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[meta.dtype], "shape": list(meta.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_index(folder: Path, split, total_parameters: int) -> None:
    """The shard index, as save_pretrained writes it."""
    index = {"metadata": {"total_parameters": total_parameters, **split.metadata},
             "weight_map": split.tensor_to_filename}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_tensor(file: Path, name: str) -> torch.Tensor:
    """One tensor, in its stored dtype. The file is opened for this tensor alone: an open
    safetensors file keeps every page read through it resident, closing it lets them go."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as fh:
        return fh.get_tensor(name)


# --- verifying ------------------------------------------------------------------------
class SavedTensors(Mapping):
    """The tensors of a safetensors checkpoint folder, each read when asked for: what the
    weights check compares with the fingerprints, without loading the model."""

    def __init__(self, folder: Path) -> None:
        self.files = weight_files(Path(folder)) or {}

    def __getitem__(self, name: str) -> torch.Tensor:
        return read_tensor(self.files[name], name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


@contextmanager
def offloaded(folder: Path, scratch: Path, dtype: torch.dtype | str = "auto"):
    """The checkpoint in ``folder`` with its weights left on disk: accelerate reads a module's
    weights from the safetensors when it runs and drops them after, so a forward pass holds
    about one module. In the stored dtype nothing is converted; what would be is put in a
    temporary folder in ``scratch``."""
    from transformers import AutoModelForCausalLM

    # accelerate warns that "some parameters are on the meta device because they were
    # offloaded to the disk": here that is the point, not news for the export's user.
    dispatch_log = logging.getLogger("accelerate.big_modeling")
    level = dispatch_log.level
    with tempfile.TemporaryDirectory(prefix=".offload-", dir=scratch) as offload:
        dispatch_log.setLevel(logging.ERROR)
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map={"": "disk"},
                                                         offload_folder=offload).eval()
        finally:
            dispatch_log.setLevel(level)
        try:
            yield model
        finally:
            del model
            release_memory()


def reference(streamed: StreamedMerge, prompts, max_new_tokens: int, scratch: Path):
    """The reference answers without the merged model in memory: the base with its weights
    left on disk, each updated module loading its merged weight (in the base's dtype: the
    in-memory merged model's weights, or with a base in the export's dtype, the export's).
    Everything else is the base's own tensors, which the export copies."""
    from xgblora_engine.export import verify as V
    from xgblora_engine.export.merged import ledger_module

    with offloaded(streamed.base, scratch, streamed.stored_dtype) as model:
        for name in streamed.ledger.modules():
            load_merged_weight(ledger_module(model, name), streamed, f"{name}.weight")
        return V.compute_reference(model, streamed.tokenizer, prompts, max_new_tokens,
                                   dtype_name(streamed.stored_dtype))


def load_merged_weight(module, streamed: StreamedMerge, key: str) -> None:
    """Before each forward, accelerate's hook on an offloaded module loads its tensors from
    the hook's ``weights_map``; this one gives it the merged weight instead of the stored one."""
    hook = module._hf_hook
    dtype = module.weight.dtype
    hook.weights_map = MergedWeight(hook.weights_map, lambda: streamed.merged_tensor(key, dtype))


class MergedWeight(Mapping):
    """A module's offloaded tensors, its ``weight`` made by ``merged`` when it is read."""

    def __init__(self, stored: Mapping, merged) -> None:
        self.stored, self.merged = stored, merged

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.merged() if name == "weight" else self.stored[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored)

    def __len__(self) -> int:
        return len(self.stored)
