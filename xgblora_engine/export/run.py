"""``export_run``: one run exported to one or more formats, checked and verified.

Order of work, chosen so the merged model exists once in memory and is never written
from a rounded copy:

1. check the output folders and the free disk space (from the base's config alone);
2. load the original base in fp32 and add the ledger's updates module by module;
   or, for hf, gguf and ollama exports of a base stored as safetensors, plan a streamed
   merge (export/streamed.py) that makes and writes the merged tensors one at a time;
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from xgblora_engine.diskspace import disk_full_error, is_disk_full
from xgblora_engine.errors import UserError
from xgblora_engine.export import card as C
from xgblora_engine.export import commands as K
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
    no_progress,
    release_memory,
)
from xgblora_engine.export.merged import (
    RunInfo,
    count_parameters,
    dtype_of,
    load_base,
    merge_in_place,
    open_run,
)
from xgblora_engine.export.push import check_repo_id, push_export
from xgblora_engine.export.requant import LEGACY
from xgblora_engine.memory.units import human_bytes
from xgblora_engine.rundir import EXPORT_RECORD, next_export_folder
from xgblora_engine.rundir import ollama_name as ollama_safe

STREAMABLE = ("hf", "gguf", "ollama")  # formats written without the merged model in memory


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


@dataclass
class ExportPlan:
    """One export, settled before anything is written: what goes where, and how."""

    info: RunInfo
    out: Path
    formats: list[str]
    dtype: str  # the HF checkpoint's dtype: "auto" until the base's own is known
    quant: str
    verify: bool
    peft_rank: int | None
    shard_size: str | int
    progress: Progress
    log: Callable[[str], None]
    prompts: tuple[str, ...]
    max_new_tokens: int
    ollama_name: str = "xgblora-model"
    needed: int = 0  # disk bytes the export was checked for (0 until checked)

    @property
    def targets(self) -> dict[str, Path]:
        return targets_for(self.out, self.formats)

    def wants(self, *formats: str) -> bool:
        return any(f in self.formats for f in formats)


@dataclass
class Merged:
    """The merged model in memory, and what the exports are verified against; or, streamed,
    the model on the meta device and the plan that writes its merged tensors."""

    model: object
    tokenizer: object
    source: object
    ref: object = None  # verify.Reference of the fp32 merged model (None without verification)
    streamed: object = None  # streamed.StreamedMerge

    def reference(self, plan: ExportPlan, scratch: Path):
        """The reference answers; streamed, computed on first use with the weights on disk."""
        if self.ref is None and self.streamed is not None:
            from xgblora_engine.export import streamed as S

            plan.progress("export", "computing the reference answers", 0.0)
            self.ref = S.reference(self.streamed, plan.prompts, plan.max_new_tokens, scratch=scratch)
        return self.ref


def export_run(run_dir: str | Path, out: str | Path | None = None, formats: str | Iterable[str] = ("hf",),
               dtype: str | None = "auto", quant: str | None = "f16", verify: bool = True,
               progress: Progress = no_progress, peft_rank: int | None = None,
               shard_size: str | int = H.DEFAULT_SHARD_SIZE, log: Callable[[str], None] | None = None,
               prompts: tuple[str, ...] = V.VERIFY_PROMPTS,
               max_new_tokens: int = V.MAX_NEW_TOKENS, into: str | Path | None = None,
               ollama_name: str | None = None, push_to: str | None = None, public: bool = False,
               hub_api=None) -> list[ExportResult]:
    """Export a run; returns one result per format (ok, checks, message). Raises UserError
    for problems found before anything is written (bad options, no disk space, …).

    ``out`` is the exact folder to create; without it, a new ``<label>-<n>`` folder in
    ``into`` (default RUN/exports), so exporting again never collides. The Ollama model is
    named ``ollama_name``, by default after the run. With ``push_to``, the verified exports
    are then uploaded to that Hub repository (private unless ``public``): one more result."""
    formats = parse_formats(formats)
    dtype, quant = dtype or "auto", quant or "f16"
    _check_options(formats, dtype, quant, peft_rank)
    if push_to is not None:
        check_repo_id(push_to)
    info = _open_exportable(run_dir)
    if out is None:
        out = next_export_folder(into if into is not None else info.run.exports_path, formats, quant)
    name = ollama_safe(ollama_name or info.run.path.name)
    plan = ExportPlan(info=info, out=Path(out), formats=formats, dtype=dtype, quant=quant, verify=verify,
                      peft_rank=peft_rank, shard_size=shard_size, progress=progress, log=log or (lambda _: None),
                      prompts=tuple(prompts), max_new_tokens=max_new_tokens, ollama_name=name)
    for target in plan.targets.values():
        check_out_free(target)
    results = _write_and_verify(plan, _merge(plan))
    if push_to is not None:
        progress("hub", "pushing", 0.5)
        results.append(push_export(results, push_to, private=not public, api=hub_api, log=plan.log))
    return results


def _check_options(formats: list[str], dtype: str, quant: str, peft_rank: int | None) -> None:
    if dtype not in ("auto", *DTYPE_BYTES):
        raise UserError(f"invalid dtype '{dtype}'", "choose auto, fp32, bf16 or fp16")
    if quant not in G.QUANTS:
        raise UserError(f"invalid GGUF type '{quant}'", f"choose one of: {', '.join(G.QUANTS)}")
    if quant in G.K_QUANTS and {"gguf", "ollama"} & set(formats) and not G.runtime_available():
        raise UserError(f"GGUF type {quant} is made by llama.cpp's own quantizer, which needs llama-cpp-python",
                        f"{G.RUNTIME_HINT}; or choose q8_0, q5_0 or q4_0, which need nothing more")
    if peft_rank is not None and peft_rank < 1:
        raise UserError(f"invalid adapter rank {peft_rank}", "use --peft-rank 1 or more, or leave it out (exact)")


def _open_exportable(run_dir: str | Path) -> RunInfo:
    info = open_run(run_dir)
    if not info.ledger.entries:
        raise UserError(f"the run in {info.run.path} has no merged round yet: nothing to export",
                        "train (or resume) until at least one round has merged")
    return info


def _merge(plan: ExportPlan) -> Merged:
    """Check the disk, then rebuild the merged model in fp32 and take its reference answers.
    Settles ``plan.dtype`` when it was "auto"."""
    plan.progress("export", "checking disk space", 0.0)
    n_params, ckpt_dtype = count_parameters(plan.info.cfg)
    if n_params is not None:
        plan.dtype = ckpt_dtype if plan.dtype == "auto" else plan.dtype
        _check_disk(plan, n_params)

    streamed, why_not = _plan_streamed(plan, n_params)
    if n_params is not None:
        _check_memory(plan, n_params, streamed, why_not)
    if streamed is not None:
        plan.log("merging shard by shard: each tensor read from the base's safetensors, updated from the "
                 "booster ledger and written, one at a time (streamed)")
        H.prepare_for_saving(streamed.model, streamed.tokenizer)
        return Merged(streamed.model, streamed.tokenizer, streamed.source, streamed=streamed)

    plan.progress("export", "loading the base model", 0.0)
    plan.log(f"rebuilding the merged model in memory from {plan.info.cfg.model.name} (fp32) and the booster "
             f"ledger (not streamed: {why_not})")
    model, tokenizer, source = load_base(plan.info.cfg)
    if n_params is None:  # the config could not be read alone: count now, before writing
        n_params = sum(p.numel() for p in model.parameters())
        plan.dtype = dtype_of(model.config) if plan.dtype == "auto" else plan.dtype
        _check_disk(plan, n_params)
    merge_in_place(model, plan.info.ledger, plan.progress, "export")
    H.prepare_for_saving(model, tokenizer)
    merged = Merged(model, tokenizer, source)
    if plan.verify:
        plan.progress("export", "computing the reference answers", 0.0)
        merged.ref = V.compute_reference(model, tokenizer, plan.prompts, plan.max_new_tokens)
    return merged


def _plan_streamed(plan: ExportPlan, n_params: int | None) -> tuple[object, str]:
    """The streamed merge when this export can be written that way, else (None, why not)."""
    from xgblora_engine.export import streamed as S

    others = [f for f in plan.formats if f not in STREAMABLE]
    if others:
        return None, f"{' and '.join(others)} need{'s' if len(others) == 1 else ''} the merged model in memory"
    if n_params is None:
        return None, "the base's config cannot be read alone"
    try:
        streamed = S.open_streamed(plan.info.cfg, plan.info.ledger, plan.dtype)
    except S.CannotStream as why:
        return None, str(why)
    streamed.take_fingerprints = plan.verify
    return streamed, ""


def _write_and_verify(plan: ExportPlan, merged: Merged) -> list[ExportResult]:
    formats, out = plan.formats, plan.out
    stagings: dict[str, Staging] = {}
    checks: dict[str, list[Check]] = {f: [] for f in formats}
    results: list[ExportResult] = []
    made_out = len(formats) > 1 and not out.exists()  # the parent of the format folders
    try:
        for fmt, target in plan.targets.items():
            stagings[fmt] = Staging(target)
        later = _write_all(plan, merged, stagings, checks)
        merged.model = None  # the exports reload the model in their own runtimes: free this one first
        release_memory()

        for fmt in formats:
            if plan.verify and fmt in later:
                plan.progress(fmt, "verifying in the target runtime", 0.0)
                plan.log(f"{fmt}: verifying")
                checks[fmt] += later[fmt]()
            results.append(_finish(fmt, stagings.pop(fmt), checks[fmt], plan.verify,
                                   _command_for(fmt, plan, merged.source), plan.log))
            plan.progress(fmt, "done", 1.0)
    except Exception as exc:
        if is_disk_full(exc):  # the disk filled up after the check (other writers, a low estimate)
            raise disk_full_error(out, plan.needed, "export again: nothing half-written was kept") from None
        raise
    finally:
        for staging in stagings.values():
            staging.discard()
        if made_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    return results


def _write_all(plan: ExportPlan, merged: Merged, stagings: dict[str, Staging],
               checks: dict[str, list[Check]]) -> dict[str, Callable[[], list[Check]]]:
    """Write every format into its staging folder; return the runtime checks to run once
    the merged model is freed."""
    later: dict[str, Callable[[], list[Check]]] = {}
    if merged.streamed is not None:
        if plan.wants("hf"):
            later.update(_write_streamed_hf(plan, merged, stagings["hf"].path))
        if plan.wants("gguf", "ollama"):  # from the hf folder just written when it is fp32
            later.update(_write_gguf(plan, merged, stagings, checks))
        return later
    if plan.wants("peft"):
        later["peft"] = _write_peft(plan, merged, stagings["peft"].path)
    hf_fingerprints = None
    if plan.wants("hf") and plan.dtype == "fp32":
        hf_fingerprints = _write_hf(plan, merged, stagings["hf"].path)
    if plan.wants("gguf", "ollama"):  # from the hf folder just written when it is fp32
        later.update(_write_gguf(plan, merged, stagings, checks))
    hf_ref = merged.ref
    if plan.wants("hf") and hf_fingerprints is None:
        if plan.verify:
            plan.progress("hf", f"casting to {plan.dtype}", 0.0)
        H.cast_in_place(merged.model, plan.dtype)
        hf_ref = _same_dtype_reference(merged, plan.dtype) if plan.verify else None
        hf_fingerprints = _write_hf(plan, merged, stagings["hf"].path)
    if plan.wants("hf") and plan.verify:
        folder, dtype, tokenizer = stagings["hf"].path, plan.dtype, merged.tokenizer
        later["hf"] = lambda: H.verify_hf(folder, hf_ref, hf_fingerprints, dtype, tokenizer, plan.log)
    return later


RUNTIME_BYTES = 600 * 2**20  # Python, torch, transformers and the tokenizer (measured: 0.5–0.6 GB)


def memory_needed(n_params: int, streamed) -> int:
    """RAM the export peaks at. In memory: the fp32 model and two thirds more for the
    loader's copies (docs/export.md: 1.50 GB measured for a 0.54 GB model, 0.6 GB of it the
    runtime); streamed: the largest tensor in fp32, three times (read, merged, cast)."""
    if streamed is None:
        return int(n_params * 4 * 5 / 3) + RUNTIME_BYTES
    largest = max(t.numel() for t in streamed.layout.values())
    return 3 * largest * 4 + RUNTIME_BYTES


def _check_memory(plan: ExportPlan, n_params: int, streamed, why_not: str) -> None:
    """Refuse an export that cannot fit in this machine's RAM at all; warn when it will only
    fit once other programs give memory back."""
    import psutil

    needed, memory = memory_needed(n_params, streamed), psutil.virtual_memory()
    how = "streamed" if streamed is not None else "merged in memory"
    plan.log(f"the export needs about {human_bytes(needed)} of RAM ({how}); "
             f"{human_bytes(memory.available)} of {human_bytes(memory.total)} is free")
    if needed > memory.total and streamed is None:
        raise UserError(
            f"this export needs about {human_bytes(needed)} of RAM to merge the model in memory, more than "
            f"this machine has ({human_bytes(memory.total)}); it cannot be streamed: {why_not}",
            "export hf, gguf or ollama alone (without peft) from a base stored as safetensors (a model folder "
            "or a Hub id): those are written tensor by tensor in a few GB; or export on a machine with more RAM")
    if needed > memory.total:
        raise UserError(f"this export needs about {human_bytes(needed)} of RAM (its largest tensor in fp32, "
                        f"three times), more than this machine has ({human_bytes(memory.total)})",
                        "export on a machine with more RAM")
    if needed > memory.available:
        plan.log(f"warning: only {human_bytes(memory.available)} of RAM is free; the export may swap or be "
                 "stopped by the system: close other programs first")


def _check_disk(plan: ExportPlan, n_params: int) -> None:
    needed, what = estimate_bytes(plan, n_params)
    check_disk(plan.out, needed, what)
    plan.needed = needed
    plan.log(f"{n_params / 1e6:.1f}M parameters; the export needs about {human_bytes(needed)} of disk ({what})")


def estimate_bytes(plan: ExportPlan, n_params: int) -> tuple[int, str]:
    """Disk the export needs, and the same in words, part by part."""
    parts, total = [], 0
    slack = 20e6  # tokenizer, config, card, plot
    if plan.wants("hf"):
        n = n_params * DTYPE_BYTES[plan.dtype] + slack
        total += n
        parts.append(f"hf {human_bytes(n)}")
    if plan.wants("peft"):
        n = PF.adapter_size(plan.info.ledger, plan.peft_rank) + slack
        total += n
        parts.append(f"peft {human_bytes(n)}")
    if plan.wants("gguf", "ollama"):
        n = int(n_params * G.QUANT_BYTES[plan.quant]) + slack
        copies = 2 if {"gguf", "ollama"} <= set(plan.formats) else 1  # a hard link when the disk allows
        total += n * copies
        parts.append(f"gguf {human_bytes(n)}" + (" ×2" if copies == 2 else ""))
        if not (plan.wants("hf") and plan.dtype == "fp32"):
            total += n_params * 4
            parts.append(f"temporary fp32 checkpoint for the converter {human_bytes(n_params * 4)}")
        if plan.quant in LEGACY + G.K_QUANTS:  # the converter's f32 file, quantized from and then deleted
            total += n_params * 4
            parts.append(f"temporary f32 GGUF {human_bytes(n_params * 4)}")
    return int(total), ", ".join(parts)


def _write_hf(plan: ExportPlan, merged: Merged, folder: Path) -> dict:
    """The checkpoint in ``plan.dtype`` (the model is already cast), and its tensors'
    fingerprints for the reload check."""
    plan.progress("hf", "writing the model card and loss plot", 0.0)
    C.write_card(folder, plan.info, merged.source, plan.dtype)
    H.write_hf(merged.model, merged.tokenizer, folder, plan.shard_size, plan.progress)
    if not plan.verify:
        return {}
    plan.progress("hf", "fingerprinting the saved tensors", 0.0)
    return V.fingerprints(merged.model)


def _write_streamed_hf(plan: ExportPlan, merged: Merged, folder: Path) -> dict[str, Callable[[], list[Check]]]:
    """The checkpoint merged and written tensor by tensor; its checks (the reference answers of
    the merged model, then the export reloaded), both with the weights left on disk."""
    plan.progress("hf", "writing the model card and loss plot", 0.0)
    C.write_card(folder, plan.info, merged.source, plan.dtype)
    H.write_hf(merged.model, merged.tokenizer, folder, plan.shard_size, plan.progress, streamed=merged.streamed)
    if not plan.verify:
        return {}
    streamed, dtype = merged.streamed, plan.dtype

    def verify() -> list[Check]:
        ref = merged.reference(plan, scratch=folder)
        return H.verify_hf(folder, ref, streamed.fingerprints, dtype, streamed.tokenizer, plan.log, offload=True)

    return {"hf": verify}


def _same_dtype_reference(merged: Merged, dtype: str):
    """Logits of the merged model cast to the export's dtype: what its reload must give."""
    ref = merged.ref
    cast = V.compute_reference(merged.model, merged.tokenizer, [p.prompt for p in ref.prompts], ref.max_new_tokens,
                               dtype, with_generation=False)
    for mine, full in zip(cast.prompts, ref.prompts):
        mine.greedy, mine.stopped, mine.margins = full.greedy, full.stopped, full.margins
        mine.fp32_logits = full.logits
    return cast


def _write_peft(plan: ExportPlan, merged: Merged, folder: Path) -> Callable[[], list[Check]]:
    info, model, tokenizer = plan.info, merged.model, merged.tokenizer
    factors = PF.adapter_factors(info.ledger, plan.peft_rank)
    PF.write_peft(folder, model, tokenizer, factors, merged.source, info.cfg, plan.progress)
    plan.log(f"peft: {factors.describe()}")
    peft_ref = merged.ref
    if plan.verify and not factors.exact:
        with PF.compressed_reference(model, info.ledger, factors):
            peft_ref = V.compute_reference(model, tokenizer, [p.prompt for p in peft_ref.prompts],
                                           peft_ref.max_new_tokens)
    extra = []
    if factors.rank is not None:
        worst = max(factors.errors.values(), default=0.0)
        extra.append(Check("SVD compression", True,
                           f"rank ≤ {factors.rank}: relative error {factors.total_error:.3g} over all updates, "
                           f"worst module {worst:.3g}"))
    cfg = info.cfg
    return lambda: extra + PF.verify_peft(folder, cfg, peft_ref, factors, tokenizer)


def _write_gguf(plan: ExportPlan, merged: Merged, stagings: dict[str, Staging],
                checks: dict[str, list[Check]]) -> dict[str, Callable[[], list[Check]]]:
    """One GGUF, converted from an fp32 checkpoint (the hf export's when it is fp32, else a
    temporary one), linked into the gguf and ollama folders, with its static checks in ``checks``."""
    from xgblora_engine.export import streamed as S

    tokenizer, quant, progress = merged.tokenizer, plan.quant, plan.progress
    config = merged.model.config
    main = "gguf" if plan.wants("gguf") else "ollama"
    gguf_path = stagings[main].path / G.gguf_name(quant)
    fp32 = stagings["hf"].path if plan.wants("hf") and plan.dtype == "fp32" else None
    temp, static = None, []
    try:
        if fp32 is None:
            temp = Staging(plan.out.parent / f"{plan.out.name}-fp32-for-gguf")
            progress(main, "writing a temporary fp32 checkpoint for the converter", 0.0)
            _write_fp32(plan, merged, temp.path, main)
            fp32 = temp.path
        progress(main, f"converting to GGUF {quant} with llama.cpp's convert_hf_to_gguf.py", 0.0)
        plan.log(f"{main}: converting to GGUF {quant} with llama.cpp's converter")
        G.convert(fp32, gguf_path, quant, plan.log, name=plan.info.run.path.name)
        if plan.verify:
            progress(main, "reading the GGUF back", 0.0)
            # streamed: the merged weights are the fp32 checkpoint's, read one tensor at a time
            weights = G.unique_tensors(merged.model) if merged.streamed is None else S.SavedTensors(fp32)
            static = [G.check_metadata(gguf_path, tokenizer, config),
                      G.check_weights(gguf_path, config, weights, quant)]
    finally:
        if temp is not None:
            temp.discard()
    for fmt in ("gguf", "ollama"):
        if not plan.wants(fmt):
            continue
        path = stagings[fmt].path / G.gguf_name(quant)
        if path != gguf_path:
            _link_or_copy(gguf_path, path)
        checks[fmt] += list(static)
        if fmt == "ollama":
            checks[fmt] += _write_modelfile(stagings[fmt].path, G.gguf_name(quant), tokenizer, merged.model,
                                            plan.verify)
    if not plan.verify:
        return {}
    shared: dict[str, list[Check]] = {}

    def runtime(path=gguf_path):
        if "result" not in shared:
            ref = merged.reference(plan, scratch=stagings[main].path) if G.runtime_available() else None
            shared["result"] = G.verify_llama_cpp(path, ref, tokenizer, quant)
        return list(shared["result"])

    return {fmt: runtime for fmt in ("gguf", "ollama") if plan.wants(fmt)}


def _write_fp32(plan: ExportPlan, merged: Merged, folder: Path, fmt: str) -> None:
    """The merged model as an fp32 Hugging Face checkpoint; streamed, tensor by tensor."""
    from xgblora_engine.export import streamed as S

    if merged.streamed is None:
        H.write_hf(merged.model, merged.tokenizer, folder, progress=plan.progress, fmt=fmt)
        return
    fp32 = S.open_streamed(plan.info.cfg, plan.info.ledger, "fp32")
    fp32.take_fingerprints = False
    H.write_hf(fp32.model, merged.tokenizer, folder, progress=plan.progress, fmt=fmt, streamed=fp32)


def _write_modelfile(folder: Path, gguf_name: str, tokenizer, model, verify: bool) -> list[Check]:
    try:
        O.write_modelfile(folder, gguf_name, tokenizer, model)
        return [O.check_modelfile(folder, tokenizer)] if verify else []
    except ValueError as exc:
        return [Check("Modelfile template", False, f"cannot write a Modelfile TEMPLATE: {exc}")]
    except O.NoChatTemplate:
        return [Check("Modelfile template", True, "skipped: the tokenizer has no chat template; "
                      "the Modelfile has no TEMPLATE (plain text completion)", skipped=True)]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _command_for(fmt: str, plan: ExportPlan, source) -> Callable[[Path], str]:
    """How to use the finished folder of ``fmt``: the command the CLI prints and the app copies."""
    return {"hf": K.hf_command, "peft": lambda folder: K.peft_command(folder, source),
            "gguf": lambda folder: K.gguf_command(folder / G.gguf_name(plan.quant)),
            "ollama": lambda folder: K.ollama_command(folder, plan.ollama_name)}[fmt]


def _finish(fmt, staging: Staging, checks: list[Check], verify: bool, command_for: Callable[[Path], str],
            log) -> ExportResult:
    """Commit (or keep as failed) one format's folder, with its record inside."""
    bad = [c for c in checks if not c.ok]
    if fmt == "hf" and verify and (staging.path / "README.md").is_file():
        C.append_verification(staging.path, checks)
    if not bad:
        skipped = [c for c in checks if c.skipped]
        if not verify:
            message = "written; not verified (verification was turned off)"
        else:
            message = f"verified: {len(checks) - len(skipped)} checks passed"
            if skipped:
                message += "; skipped: " + "; ".join(f"{c.name} ({c.detail.removeprefix('skipped: ')})" for c in skipped)
        final = staging.out
    else:
        message = "verification failed: " + "; ".join(f"{c.name}: {c.detail}" for c in bad)
        final = staging.failed_path
    command = command_for(final) if not bad else ""
    result = ExportResult(fmt, str(final), not bad, list(checks), message, command)
    (staging.path / EXPORT_RECORD).write_bytes(msgspec.json.encode(result.to_event()))
    if bad:
        staging.keep_as_failed()
    else:
        staging.commit()
    for c in checks:
        log(f"  [{'skip' if c.skipped else ('ok' if c.ok else 'FAIL')}] {fmt} {c.name}: {c.detail}")
    return result
