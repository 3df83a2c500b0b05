"""The merged model as a Hugging Face checkpoint plain `transformers` loads: sharded
safetensors, tokenizer with its chat template, a generation config whose eos covers the
end-of-turn token, and a model card with the run's settings, rounds, losses and loss plot."""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path

from xgblora_engine.export.common import (
    SAVE_DTYPES,
    Check,
    Progress,
    dtype_name,
    end_of_turn_ids,
    no_progress,
    release_memory,
)
from xgblora_engine.export.merged import drop_quantizer_marker

DEFAULT_SHARD_SIZE = "2GB"


def prepare_for_saving(model, tokenizer) -> None:
    """Generation config that stops at the end of an assistant turn; no quantizer marker."""
    drop_quantizer_marker(model)
    eot = end_of_turn_ids(tokenizer)
    if eot:
        model.generation_config.eos_token_id = eot if len(eot) > 1 else eot[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.pad_token_id is None and eot:
        model.generation_config.pad_token_id = eot[0]


def cast_in_place(model, dtype: str) -> None:
    """Parameters (and saved floating buffers) one at a time, so the fp32 and the cast copy
    never coexist in full. Non-persistent buffers such as rotary frequencies stay as they
    are, exactly as when transformers loads the saved checkpoint in that dtype."""
    import torch

    if dtype == "fp32":
        return
    target = getattr(torch, SAVE_DTYPES[dtype])
    saved = set(model.state_dict().keys())
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.to(target)
        for name, buf in list(model.named_buffers()):
            if name in saved and buf.is_floating_point():
                owner, _, leaf = name.rpartition(".")
                model.get_submodule(owner)._buffers[leaf] = buf.to(target)
    model.config.dtype = target
    gc.collect()


def write_hf(model, tokenizer, folder: Path, shard_size: str | int = DEFAULT_SHARD_SIZE,
             progress: Progress = no_progress, fmt: str = "hf", streamed=None) -> None:
    """Weights (sharded safetensors), config, generation config and tokenizer into ``folder``.

    transformers writes one shard at a time, so the extra memory is one shard's bytes. With
    ``streamed`` (a streamed.StreamedMerge, whose model is on the meta device) the merged
    weights are made and written one tensor at a time from the base's files instead."""
    progress(fmt, "writing safetensors shards", 0.0)
    if streamed is None:
        model.save_pretrained(folder, safe_serialization=True, max_shard_size=shard_size)
    else:
        streamed.write(folder, shard_size, progress, fmt)
    tokenizer.save_pretrained(folder)
    progress(fmt, "writing safetensors shards", 1.0)


def verify_hf(folder: Path, ref, expected_fingerprints: dict, dtype: str, base_tokenizer,
              log: Callable[[str], None] = lambda _: None, offload: bool = False) -> list[Check]:
    """Reload with plain transformers (as a user would) and compare with the reference.

    ``offload``: the model is loaded with its weights left on disk and the weights are read
    back from the files one at a time, so checking holds about one tensor (a streamed export)."""
    from transformers import AutoTokenizer

    from xgblora_engine.export import verify as V
    from xgblora_engine.export.streamed import SavedTensors

    checks: list[Check] = []
    with ExitStack() as stack:
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = stack.enter_context(_reloaded(folder, offload))
        except Exception as exc:  # any reload failure is the finding
            return [Check("reload with transformers", False, f"{type(exc).__name__}: {exc}")]
        got_dtype = dtype_name(next(model.parameters()).dtype)
        checks.append(Check("reload with transformers", got_dtype == dtype,
                            f"AutoModelForCausalLM loads it as {got_dtype} (exported {dtype})"
                            + (", its weights left on disk" if offload else "")))
        saved = SavedTensors(folder) if offload else model.state_dict()
        checks.append(V.check_fingerprints("weights", expected_fingerprints, saved))
        checks.append(check_tokenizer(tokenizer, base_tokenizer, ref))
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        missing = [t for t in ref.eot_ids if t not in eos]
        checks.append(Check("generation config", not missing,
                            f"eos_token_id {eos}" + (f" lacks end-of-turn ids {missing}" if missing else
                                                     " covers the end-of-turn token")))
        got = [V.prompt_logits(model, p.ids) for p in ref.prompts]
        rtol = max(V.LOGIT_RTOL[dtype], V.LOGIT_RTOL.get(ref.dtype, 0.0))  # the coarser of the two dtypes
        logits = V.check_logits("logits", got, ref, rtol, f"the {ref.dtype} merged model")
        if dtype != "fp32" and all(p.fp32_logits is not None for p in ref.prompts):
            drift = max(float((g.float() - p.fp32_logits).abs().max()) for g, p in zip(got, ref.prompts))
            logits.detail += f"; {dtype} rounding moves logits by up to {drift:.3g} from the fp32 merged model"
        checks.append(logits)
        runs = [V.greedy(model, p.ids, ref.eot_ids, ref.max_new_tokens, use_model_config=True)[:2]
                for p in ref.prompts]
        checks.append(V.check_stops("stops at end of turn", runs, ref, tokenizer, "transformers"))
        del model, saved  # the last references: the model is freed as the reload's context closes
    return checks


@contextmanager
def _reloaded(folder: Path, offload: bool):
    """The export loaded as a user would (all in memory), or with its weights left on disk."""
    from transformers import AutoModelForCausalLM

    from xgblora_engine.export.streamed import offloaded

    if offload:
        with offloaded(folder, folder) as model:
            yield model
        return
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()
    try:
        yield model
    finally:
        del model
        release_memory()


def check_tokenizer(tokenizer, base_tokenizer, ref) -> Check:
    """Same chat template, and the same token ids for the verification prompts."""
    if getattr(tokenizer, "chat_template", None) != getattr(base_tokenizer, "chat_template", None):
        return Check("tokenizer and chat template", False, "the saved chat template differs from the base model's")
    from xgblora_engine.export.common import chat_ids

    for p in ref.prompts:
        ids = chat_ids(tokenizer, p.prompt)
        if ids != p.ids:
            return Check("tokenizer and chat template", False,
                         f"{p.prompt!r} tokenizes to {len(ids)} ids, the base tokenizer gives {len(p.ids)}")
    return Check("tokenizer and chat template", True,
                 "chat template kept; prompts tokenize exactly as with the base tokenizer")
