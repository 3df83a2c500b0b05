"""``export_run``: one run exported to one or more formats, checked and verified.

Order of work, chosen so the merged model exists once in memory and is never written
from a rounded copy:

1. check the output folders and the free disk space (from the base's config alone);
2. load the original base in fp32 and add the ledger's updates module by module;
3. take the verification reference (logits and greedy answers on fixed prompts);
4. write, each into a hidden staging folder: the PEFT adapter, the fp32 HF checkpoint
   (or a temporary one) from which llama.cpp's converter writes the GGUF, the GGUF's
   read-back checks, the Modelfile, and last the HF checkpoint cast to its dtype;
5. free the merged model, then reload every export in its runtime and compare;
6. rename each staging folder to its final name if all its checks passed, else keep it
   as ``NAME.FAILED-VERIFICATION`` and report what differed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from xgblora_engine.errors import UserError
from xgblora_engine.export import card as C
from xgblora_engine.export import gguf as G
from xgblora_engine.export import hf as H
from xgblora_engine.export import ollama as O
from xgblora_engine.export import peft as PF
from xgblora_engine.export import verify as V
from xgblora_engine.export.common import (
    DTYPE_BYTES,
    FORMATS,
    Check,
    ExportResult,
    Progress,
    Staging,
    check_disk,
    check_out_free,
    gb,
    no_progress,
    release_memory,
)
from xgblora_engine.export.merged import (
    count_parameters,
    dtype_of,
    load_base,
    merge_in_place,
    open_run,
)


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for item in items:
        for f in str(item).split(","):
            f = f.strip().lower()
            if not f:
                continue
            if f not in FORMATS:
                raise UserError(f"unknown export format '{f}'", f"choose from: {', '.join(FORMATS)}")
            if f not in out:
                out.append(f)
    if not out:
        raise UserError("no export format given", f"choose from: {', '.join(FORMATS)}")
    return out


def targets_for(out: Path, formats: list[str]) -> dict[str, Path]:
    """One format: ``out`` is its folder. Several: ``out/<format>`` each."""
    return {formats[0]: out} if len(formats) == 1 else {f: out / f for f in formats}


def export_run(run_dir: str | Path, out: str | Path | None = None, formats: str | Iterable[str] = ("hf",),
               dtype: str | None = "auto", quant: str | None = "f16", verify: bool = True,
               progress: Progress = no_progress, peft_rank: int | None = None,
               shard_size: str | int = H.DEFAULT_SHARD_SIZE, log: Callable[[str], None] | None = None,
               prompts: tuple[str, ...] = V.VERIFY_PROMPTS,
               max_new_tokens: int = V.MAX_NEW_TOKENS) -> list[ExportResult]:
    """Export a run; returns one result per format (ok, checks, message). Raises UserError
    for problems found before anything is written (bad options, no disk space, …)."""
    log = log or (lambda _: None)
    formats = parse_formats(formats)
    dtype, quant = dtype or "auto", quant or "f16"
    if dtype not in ("auto", *DTYPE_BYTES):
        raise UserError(f"invalid dtype '{dtype}'", "choose auto, fp32, bf16 or fp16")
    if quant not in G.QUANTS:
        raise UserError(f"invalid GGUF type '{quant}'", f"choose one of: {', '.join(G.QUANTS)}")
    if peft_rank is not None and peft_rank < 1:
        raise UserError(f"invalid adapter rank {peft_rank}", "use --peft-rank 1 or more, or leave it out (exact)")
    info = open_run(run_dir)
    if not info.ledger.entries:
        raise UserError(f"the run in {info.run.path} has no merged round yet: nothing to export",
                        "train (or resume) until at least one round has merged")
    out = Path(out) if out is not None else info.run.exports_path / time.strftime("%Y%m%d-%H%M%S")
    targets = targets_for(out, formats)
    for target in targets.values():
        check_out_free(target)

    progress("export", "checking disk space", 0.0)
    n_params, ckpt_dtype = count_parameters(info.cfg)
    if n_params is not None:
        save_dtype = ckpt_dtype if dtype == "auto" else dtype
        _check_disk(out, formats, n_params, save_dtype, quant, info, peft_rank, log)

    progress("export", "loading the base model", 0.0)
    log(f"rebuilding the merged model from {info.cfg.model.name} (fp32) and the booster ledger")
    model, tokenizer, source = load_base(info.cfg)
    if n_params is None:  # the config could not be read alone: count now, before writing
        n_params = sum(p.numel() for p in model.parameters())
        save_dtype = dtype_of(model.config) if dtype == "auto" else dtype
        _check_disk(out, formats, n_params, save_dtype, quant, info, peft_rank, log)
    merge_in_place(model, info.ledger, progress, "export")
    H.prepare_for_saving(model, tokenizer)
    ref = None
    if verify:
        progress("export", "computing the reference answers", 0.0)
        ref = V.compute_reference(model, tokenizer, prompts, max_new_tokens)

    stagings: dict[str, Staging] = {}
    checks: dict[str, list[Check]] = {f: [] for f in formats}
    results: list[ExportResult] = []
    made_out = len(formats) > 1 and not out.exists()  # the parent of the format folders
    try:
        for fmt in formats:
            stagings[fmt] = Staging(targets[fmt])
        later: dict[str, Callable[[], list[Check]]] = {}  # runtime checks once the model is freed

        if "peft" in formats:
            later["peft"] = _write_peft(model, tokenizer, info, source, stagings["peft"].path, peft_rank,
                                        ref, verify, progress, log)
        hf_fingerprints = None
        if "hf" in formats and save_dtype == "fp32":
            hf_fingerprints = _write_hf(model, tokenizer, info, source, stagings["hf"].path, "fp32",
                                        shard_size, progress, verify)
        if "gguf" in formats or "ollama" in formats:
            reuse = stagings["hf"].path if hf_fingerprints is not None else None
            later.update(_write_gguf(model, tokenizer, formats, stagings, reuse, quant, ref, verify,
                                     checks, out, progress, log))
        if "hf" in formats and hf_fingerprints is None:
            if verify:
                progress("hf", f"casting to {save_dtype}", 0.0)
            H.cast_in_place(model, save_dtype)
            hf_ref = _same_dtype_reference(model, tokenizer, ref, save_dtype) if verify else None
            hf_fingerprints = _write_hf(model, tokenizer, info, source, stagings["hf"].path, save_dtype,
                                        shard_size, progress, verify)
        else:
            hf_ref = ref
        if "hf" in formats and verify:
            later["hf"] = lambda: H.verify_hf(stagings["hf"].path, hf_ref, hf_fingerprints, save_dtype,
                                              tokenizer, log)
        del model
        release_memory()

        for fmt in formats:
            if verify and fmt in later:
                progress(fmt, "verifying in the target runtime", 0.0)
                log(f"{fmt}: verifying")
                checks[fmt] += later[fmt]()
            results.append(_finish(fmt, stagings.pop(fmt), checks[fmt], verify, O.ollama_name(out), log))
            progress(fmt, "done", 1.0)
    finally:
        for staging in stagings.values():
            staging.discard()
        if made_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    return results


def _check_disk(out, formats, n_params, save_dtype, quant, info, peft_rank, log) -> None:
    needed, what = estimate_bytes(formats, n_params, save_dtype, quant, info.ledger, peft_rank)
    check_disk(out, needed, what)
    log(f"{n_params / 1e6:.1f}M parameters; the export needs about {gb(needed)} of disk ({what})")


def estimate_bytes(formats, n_params, save_dtype, quant, ledger, peft_rank) -> tuple[int, str]:
    parts, total = [], 0
    slack = 20e6  # tokenizer, config, card, plot
    if "hf" in formats:
        n = n_params * DTYPE_BYTES[save_dtype] + slack
        total += n
        parts.append(f"hf {gb(n)}")
    if "peft" in formats:
        n = PF.adapter_size(ledger, peft_rank) + slack
        total += n
        parts.append(f"peft {gb(n)}")
    if "gguf" in formats or "ollama" in formats:
        n = int(n_params * G.QUANT_BYTES[quant]) + slack
        copies = 2 if {"gguf", "ollama"} <= set(formats) else 1  # a hard link when the disk allows
        total += n * copies
        parts.append(f"gguf {gb(n)}" + (" ×2" if copies == 2 else ""))
        if not ("hf" in formats and save_dtype == "fp32"):
            total += n_params * 4
            parts.append(f"temporary fp32 checkpoint for the converter {gb(n_params * 4)}")
    return int(total), ", ".join(parts)


def _write_hf(model, tokenizer, info, source, folder: Path, dtype: str, shard_size, progress, verify):
    progress("hf", "writing the model card and loss plot", 0.0)
    C.write_card(folder, info, source, dtype)
    H.write_hf(model, tokenizer, folder, shard_size, progress)
    if not verify:
        return {}
    progress("hf", "fingerprinting the saved tensors", 0.0)
    return V.fingerprints(model)


def _same_dtype_reference(model, tokenizer, ref, dtype):
    """Logits of the merged model cast to the export's dtype: what its reload must give."""
    cast = V.compute_reference(model, tokenizer, [p.prompt for p in ref.prompts], ref.max_new_tokens,
                               dtype, with_generation=False)
    for mine, full in zip(cast.prompts, ref.prompts):
        mine.greedy, mine.stopped, mine.margins = full.greedy, full.stopped, full.margins
        mine.fp32_logits = full.logits
    return cast


def _write_peft(model, tokenizer, info, source, folder, peft_rank, ref, verify, progress, log):
    factors = PF.adapter_factors(info.ledger, peft_rank)
    PF.write_peft(folder, model, tokenizer, factors, source, info.cfg, progress)
    log(f"peft: {factors.describe()}")
    peft_ref = ref
    if verify and not factors.exact:
        with PF.compressed_reference(model, info.ledger, factors):
            peft_ref = V.compute_reference(model, tokenizer, [p.prompt for p in ref.prompts],
                                           ref.max_new_tokens)
    extra = []
    if factors.rank is not None:
        worst = max(factors.errors.values(), default=0.0)
        extra.append(Check("SVD compression", True,
                           f"rank ≤ {factors.rank}: relative error {factors.total_error:.3g} over all updates, "
                           f"worst module {worst:.3g}"))
    cfg, base_tok = info.cfg, tokenizer
    return lambda: extra + PF.verify_peft(folder, cfg, peft_ref, factors, base_tok)


def _write_gguf(model, tokenizer, formats, stagings, reuse, quant, ref, verify, checks, out, progress, log):
    main = "gguf" if "gguf" in formats else "ollama"
    gguf_path = stagings[main].path / G.gguf_name(quant)
    temp = None
    try:
        if reuse is None:
            temp = Staging(out.parent / f"{out.name}-fp32-for-gguf")
            progress(main, "writing a temporary fp32 checkpoint for the converter", 0.0)
            H.write_hf(model, tokenizer, temp.path, progress=progress, fmt=main)
        progress(main, f"converting to GGUF {quant} with llama.cpp's convert_hf_to_gguf.py", 0.0)
        log(f"{main}: converting to GGUF {quant} with llama.cpp's converter")
        G.convert(reuse or temp.path, gguf_path, quant, log)
    finally:
        if temp is not None:
            temp.discard()
    static = []
    if verify:
        progress(main, "reading the GGUF back", 0.0)
        static = [G.check_metadata(gguf_path, tokenizer, model), G.check_weights(gguf_path, model, quant)]
    later = {}
    for fmt in ("gguf", "ollama"):
        if fmt not in formats:
            continue
        path = stagings[fmt].path / G.gguf_name(quant)
        if path != gguf_path:
            _link_or_copy(gguf_path, path)
        checks[fmt] += list(static)
        if fmt == "ollama":
            try:
                O.write_modelfile(stagings[fmt].path, G.gguf_name(quant), tokenizer, model)
                if verify:
                    checks[fmt].append(O.check_modelfile(stagings[fmt].path, tokenizer))
            except ValueError as exc:
                checks[fmt].append(Check("Modelfile template", False, f"cannot write a Modelfile TEMPLATE: {exc}"))
            except O.NoChatTemplate:
                checks[fmt].append(Check("Modelfile template", True, "skipped: the tokenizer has no chat template; "
                                         "the Modelfile has no TEMPLATE (plain text completion)", skipped=True))
    if verify:
        shared: dict[str, list[Check]] = {}

        def runtime(path=gguf_path):
            if "result" not in shared:
                shared["result"] = G.verify_llama_cpp(path, ref, tokenizer, quant)
            return list(shared["result"])

        for fmt in ("gguf", "ollama"):
            if fmt in formats:
                later[fmt] = runtime
    return later


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _finish(fmt, staging: Staging, checks: list[Check], verify: bool, name: str, log) -> ExportResult:
    bad = [c for c in checks if not c.ok]
    if fmt == "hf" and verify and (staging.path / "README.md").is_file():
        C.append_verification(staging.path, checks)
    command = ""
    if not bad:
        path = staging.commit()
        skipped = [c for c in checks if c.skipped]
        if not verify:
            message = "written; not verified (verification was turned off)"
        else:
            message = f"verified: {len(checks) - len(skipped)} checks passed"
            if skipped:
                message += "; skipped: " + "; ".join(f"{c.name} ({c.detail.removeprefix('skipped: ')})" for c in skipped)
        if fmt == "ollama":
            command = O.create_command(path, name)
    else:
        path = staging.keep_as_failed()
        message = "verification failed: " + "; ".join(f"{c.name}: {c.detail}" for c in bad)
    for c in checks:
        log(f"  [{'skip' if c.skipped else ('ok' if c.ok else 'FAIL')}] {fmt} {c.name}: {c.detail}")
    return ExportResult(fmt, str(path), not bad, list(checks), message, command)
