"""The legacy llama.cpp block types (q4_0, q4_1, q5_0, q5_1) from an f32 GGUF, in numpy.

llama.cpp's converter writes only f32, f16, bf16 and q8_0. The 4- and 5-bit types are
quantized here with gguf-py's own implementation of ggml's reference quantizers, by the
same rules as ``llama-quantize`` for these types: every 2-D weight whose rows split into
32-value blocks takes the chosen type; 1-D tensors (norms, biases) stay f32; the output
projection (or the tied embedding that serves as it) takes q8_0, because llama.cpp would
give it a K-type (q6_K) that is not reimplemented here. The file is streamed: one tensor
is quantized at a time, never the whole model.
"""

from __future__ import annotations

from pathlib import Path

LEGACY = ("q4_0", "q4_1", "q5_0", "q5_1")
BLOCK = 32  # values per block of every legacy type


def requantize(src: Path, dst: Path, quant: str, log=lambda _: None) -> None:
    """Write ``dst``: ``src`` (a GGUF of f32/f16/bf16 tensors) with its weights in ``quant``."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quant_shape_to_byte_shape, quantize

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    _copy_metadata(reader, writer, _file_type(quant))

    names = {t.name for t in reader.tensors}
    output = "output.weight" if "output.weight" in names else "token_embd.weight"
    plan = []
    for t in reader.tensors:
        qtype = _type_for(t, quant, output, gguf.GGMLQuantizationType)
        plan.append((t, qtype))
        if qtype is None:  # copied as it is
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        else:
            shape = quant_shape_to_byte_shape(tuple(int(x) for x in t.data.shape), qtype)
            writer.add_tensor_info(t.name, shape, np.dtype(np.uint8), int(np.prod(shape)), qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t, qtype in plan:
        if qtype is None:
            writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
        else:
            values = dequantize(t.data, t.tensor_type).astype("float32", copy=False)
            writer.write_tensor_data(quantize(values.reshape(t.data.shape), qtype))
    writer.close()
    log(f"requantized {len(plan)} tensors to {quant} ({output} at q8_0, 1-D tensors at f32)")


def _type_for(t, quant: str, output: str, Q):
    """The type a tensor gets, or None to copy it unchanged."""
    if len(t.data.shape) < 2 or t.data.shape[-1] % BLOCK or t.tensor_type not in (Q.F32, Q.F16, Q.BF16):
        return None
    if not t.name.endswith(".weight"):
        return None
    if t.name == output:
        return Q.Q8_0
    return getattr(Q, quant.upper())


def _file_type(quant: str) -> int:
    from gguf import LlamaFileType

    return int(getattr(LlamaFileType, f"MOSTLY_{quant.upper()}"))


def _copy_metadata(reader, writer, file_type: int) -> None:
    """Every key of ``reader`` except the ones the writer makes itself, with the new file type."""
    import gguf

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = file_type if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
