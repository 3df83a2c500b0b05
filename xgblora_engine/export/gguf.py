"""The merged model as one GGUF file for llama.cpp-family runtimes (llama.cpp, Ollama,
LM Studio, …), written by llama.cpp's own converter from a Hugging Face save.

Checked twice: right after conversion every tensor of the file is read back (dequantized)
and compared with the merged weights (the merged model in memory, or, for a streamed
export, the fp32 checkpoint the converter read, one tensor at a time), and
the tokenizer metadata and chat template with the tokenizer's; then the file is run in
llama.cpp itself (llama-cpp-python, optional) on the fixed prompts: same tokens, logits
close to transformers', the same greedy text and a stop at the end-of-turn token.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Mapping
from pathlib import Path

from xgblora_engine.export.common import Check
from xgblora_engine.payloads import GGUF_TYPES, K_QUANTS

QUANTS = GGUF_TYPES
# Bytes per weight: a block of 32 values and its scale (and minimum for the _1 types).
# K-types: a 256-value super-block (q6_K 210 bytes, q5_K 176, q4_K 144); the _M mixes give
# some tensors (attention v, ffn down, the output) a finer type, about +5 %.
QUANT_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q6_K": 210 / 256,
               "q5_K_M": 1.05 * 176 / 256, "q5_1": 24 / 32, "q5_0": 22 / 32, "q4_K_M": 1.05 * 144 / 256,
               "q4_1": 20 / 32, "q4_0": 18 / 32}
# Relative Frobenius error of a tensor read back from the file, by file type.
# Measured on SmolLM2-135M: q5_1 ≤ 0.053, q4_0 ≤ 0.10 (1.5× that: a wrong tensor is ~1.4).
WEIGHT_RTOL = {"f32": 1e-6, "f16": 2e-3, "bf16": 1e-2, "q8_0": 2e-2, "q6_K": 0.04, "q5_K_M": 0.08,
               "q5_1": 0.08, "q5_0": 0.08, "q4_K_M": 0.15, "q4_1": 0.15, "q4_0": 0.15}
# llama.cpp's logits vs the fp32 merged model in transformers, relative to the largest logit.
# Measured on SmolLM2-135M: f16 ≤ 0.0016, q8_0 ≤ 0.05 (llama.cpp also quantizes activations).
# The 4- and 5-bit bounds scale q8_0's by the weights' rounding error (not yet run in llama.cpp here).
LLAMA_CPP_RTOL = {"f32": 2e-3, "f16": 6e-3, "bf16": 2e-2, "q8_0": 0.1, "q6_K": 0.2, "q5_K_M": 0.3,
                  "q5_1": 0.3, "q5_0": 0.3, "q4_K_M": 0.5, "q4_1": 0.5, "q4_0": 0.5}
# Architectures whose converter transformations are known here (llama's q/k row permutation).
WEIGHT_CHECKED_ARCHS = ("llama", "mistral", "qwen2", "qwen3")
RUNTIME_HINT = "pip install 'xgblora-studio[gguf-runtime]' (llama-cpp-python; builds llama.cpp, ~8 min)"


def gguf_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def convert(hf_folder: Path, outfile: Path, quant: str, log=lambda _: None, name: str | None = None) -> None:
    """llama.cpp's converter writes the file (the model called ``name`` in its metadata);
    the 4- and 5-bit types are quantized from an f32 file it writes first (beside
    ``outfile``, deleted afterwards): the legacy ones here, the K-types by llama.cpp."""
    from xgblora_engine.export.converter import run_converter
    from xgblora_engine.export.requant import LEGACY, requantize

    if quant not in LEGACY + K_QUANTS:
        run_converter(hf_folder, outfile, quant, log, name)
        return
    full = outfile.with_name(outfile.name + ".f32.tmp")
    try:
        run_converter(hf_folder, full, "f32", log, name)
        (llama_quantize if quant in K_QUANTS else requantize)(full, outfile, quant, log)
    finally:
        full.unlink(missing_ok=True)


# llama.h's llama_ftype of each K-type (LLAMA_FTYPE_MOSTLY_*)
K_FTYPES = {"q4_K_M": 15, "q5_K_M": 17, "q6_K": 18}


def llama_quantize(src: Path, dst: Path, quant: str, log=lambda _: None) -> None:
    """``dst``: ``src`` (an f32 GGUF) quantized to a K-type by llama.cpp's own quantizer,
    the code behind ``llama-quantize``, with its rules for which tensor takes which type."""
    import ctypes

    import llama_cpp

    from xgblora_engine.errors import UserError

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = K_FTYPES[quant]
    log(f"quantizing to {quant} with llama.cpp's quantizer (llama-cpp-python {llama_cpp.__version__})")
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0 or not dst.is_file():
        dst.unlink(missing_ok=True)
        raise UserError(f"llama.cpp could not quantize the model to {quant} (status {status})",
                        "choose q8_0 or a legacy type (q5_0, q4_0), which do not need llama.cpp's quantizer")


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:
        return None


def check_metadata(path: Path, tokenizer, config) -> Check:
    from gguf import GGUFReader

    from xgblora_engine.export.common import end_of_turn_ids

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:
        return Check("GGUF metadata", False, f"the file does not read as GGUF: {exc}")
    arch = _field(reader, "general.architecture")
    problems = []
    template = _field(reader, "tokenizer.chat_template")
    if getattr(tokenizer, "chat_template", None) and template != tokenizer.chat_template:
        problems.append("chat template missing or different" if template else "no chat template in the file")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens.data) if tokens is not None else 0
    vocab = getattr(config, "vocab_size", None)
    if n_tokens not in (len(tokenizer), vocab):  # the converter pads to the embedding's size
        problems.append(f"{n_tokens} tokens in the file, the tokenizer has {len(tokenizer)}")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    eot = _field(reader, "tokenizer.ggml.eot_token_id")
    turn_ends = end_of_turn_ids(tokenizer)
    if eos not in turn_ends and eot not in turn_ends:
        problems.append(f"eos id {eos} is not an end-of-turn token {turn_ends}")
    blocks = _field(reader, f"{arch}.block_count")
    n_layers = getattr(config, "num_hidden_layers", blocks)
    if blocks != n_layers:
        problems.append(f"{blocks} blocks, the model has {n_layers}")
    del reader
    if problems:
        return Check("GGUF metadata", False, "; ".join(problems))
    return Check("GGUF metadata", True, f"{arch}, {blocks} blocks, {n_tokens} tokens, chat template and "
                                        f"end-of-turn eos ({eos}) inside")


def llama_permute(w, n_head: int, n_head_kv: int | None):
    """The row order llama.cpp's converter gives llama's q/k projections."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unique_tensors(model) -> dict:
    """The model's state dict with each tied tensor once (as the checkpoint stores it)."""
    seen, unique = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            unique[name] = tensor
    return unique


def check_weights(path: Path, config, tensors: Mapping, quant: str) -> Check:
    """Every tensor in the file, dequantized, against the merged weights it came from
    (``tensors``: name -> tensor, tied ones once; read one at a time when it is a lazy
    mapping such as a written checkpoint's)."""
    import gguf
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    arch_name = config.model_type
    if arch_name not in WEIGHT_CHECKED_ARCHS:
        return Check("GGUF weights", True, f"skipped: no tensor mapping known here for {arch_name}", skipped=True)
    arch = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name), None)
    if arch is None:
        return Check("GGUF weights", True, f"skipped: the gguf package does not know {arch_name}", skipped=True)
    n_layers = config.num_hidden_layers
    tmap = gguf.get_tensor_name_map(arch, n_layers)
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None)
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:
        return Check("GGUF weights", False, f"the file does not read as GGUF: {exc}")
    in_file = {t.name: t for t in reader.tensors}
    compared, worst, bad, missing = 0, (-1.0, ""), [], []
    for name in tensors:
        target = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None or target not in in_file:
            missing.append(name)
            continue
        t = in_file[target]
        want = tensors[name].detach().float().cpu().numpy()
        if int(np.prod(t.shape)) != want.size:
            bad.append(f"{target}: {tuple(int(x) for x in t.shape)} elements vs {want.shape}")
            continue
        err = _relative_error(t, want, dequantize)
        if err > WEIGHT_RTOL[quant] and target.endswith(("attn_q.weight", "attn_k.weight")):
            heads = n_head if "attn_q" in target else n_kv
            err = _relative_error(t, llama_permute(want, n_head, heads), dequantize)
        compared += 1
        if not err <= WEIGHT_RTOL[quant]:
            bad.append(f"{target} (relative error {err:.3g})")
        if err > worst[0]:
            worst = (err, target)
    del reader, in_file
    gc.collect()
    # Tensors the converter legitimately leaves out: none for these architectures.
    if bad or missing:
        parts = []
        if bad:
            parts.append(f"{len(bad)} tensors differ from the merged model beyond {quant} rounding: "
                         + ", ".join(bad[:4]))
        if missing:
            parts.append(f"{len(missing)} tensors missing from the file: {', '.join(missing[:4])}")
        return Check("GGUF weights", False, "; ".join(parts))
    return Check("GGUF weights", True, f"{compared} tensors read back match the merged model within {quant} "
                                       f"rounding (worst relative error {max(worst[0], 0.0):.2g}, {worst[1]})")


def _relative_error(t, want, dequantize, rows_per_chunk: int = 4096) -> float:
    """‖file − want‖ / ‖want‖, dequantizing a block of rows at a time (bounded memory)."""
    import numpy as np

    want2 = want.reshape(want.shape[0], -1) if want.ndim > 1 else want.reshape(1, -1)
    data = t.data.reshape(want2.shape[0], -1) if want.ndim > 1 else t.data.reshape(1, -1)
    err_sq = 0.0
    for start in range(0, want2.shape[0], rows_per_chunk):
        got = np.asarray(dequantize(data[start:start + rows_per_chunk], t.tensor_type), dtype=np.float32)
        diff = got.reshape(-1) - want2[start:start + rows_per_chunk].reshape(-1)
        err_sq += float(np.dot(diff, diff))
    norm = float(np.linalg.norm(want2)) or 1.0
    return err_sq ** 0.5 / norm


@functools.cache
def runtime_available() -> bool:
    """Whether llama-cpp-python imports (installed, with its dependencies and its library)."""
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install is as good as none: say how to get it
        return False
    return True


def verify_llama_cpp(path: Path, ref, tokenizer, quant: str) -> list[Check]:
    """Run the file in llama.cpp on the fixed prompts."""
    from xgblora_engine.export import verify as V

    if not runtime_available():
        return [Check("llama.cpp run", True, f"skipped: llama-cpp-python is not installed ({RUNTIME_HINT}); "
                                             "the file was checked by reading it back instead", skipped=True)]
    import llama_cpp
    import numpy as np
    import torch

    n_ctx = max(len(p.ids) for p in ref.prompts) + ref.max_new_tokens + 8
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True,
                              n_threads=max(1, os.cpu_count() or 1), verbose=False)
    except Exception as exc:
        return [Check("llama.cpp run", False, f"llama.cpp cannot load the file: {exc}")]
    try:
        vocab = getattr(getattr(llm, "_model", None), "vocab", None)

        def is_eog(token: int) -> bool:
            if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
                return bool(llama_cpp.llama_vocab_is_eog(vocab, token))
            return token == llm.token_eos() or token in ref.eot_ids

        tok_bad, diffs, runs = [], [], []
        for p in ref.prompts:
            ids = llm.tokenize(p.text.encode("utf-8"), add_bos=False, special=True)
            if ids != p.ids:
                tok_bad.append(f"{p.prompt!r}: {len(ids)} tokens in llama.cpp, {len(p.ids)} in transformers")
            llm.reset()
            llm.eval(p.ids)
            logits = torch.from_numpy(np.array(llm.scores[:len(p.ids)], dtype=np.float32))
            diffs.append(logits)
            new, stopped = [], False
            for _ in range(ref.max_new_tokens):
                token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                new.append(token)
                if is_eog(token):
                    stopped = True
                    break
                llm.eval([token])
            runs.append((new, stopped))
    finally:
        llm.close()
    checks = [Check("llama.cpp tokenization", not tok_bad,
                    "; ".join(tok_bad) if tok_bad else "the chat-templated prompts tokenize to the same ids")]
    checks.append(V.check_logits("llama.cpp logits", diffs, ref, LLAMA_CPP_RTOL[quant],
                                 "the fp32 merged model in transformers"))
    ties = [float((g - p.logits).abs().max()) for g, p in zip(diffs, ref.prompts)]
    checks.append(V.check_same_greedy("llama.cpp greedy text", [r[0] for r in runs], ref, tokenizer, ties,
                                      "llama.cpp"))
    stops = V.check_stops("stops at end of turn", runs, ref, tokenizer, "llama.cpp")
    if not stops.ok and quant not in ("f32", "f16", "bf16"):
        stops.detail += (f" (transformers ends these answers: the drift comes from {quant} quantization, "
                         "which is too coarse for this model; --quant f16 keeps its answers)")
    checks.append(stops)
    return checks
