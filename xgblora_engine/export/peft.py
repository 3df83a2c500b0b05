"""The booster ledger as a standard PEFT LoRA adapter.

The sum of a module's merged boosters is exactly a low-rank update,
``Σ scaling_t·B_t·A_t = B_cat·A_cat`` with ``B_cat = [s_1·B_1 | s_2·B_2 | …]`` and
``A_cat = [A_1; A_2; …]``, so it is written as it is: rank per module = the sum of its
boosters' ranks (``rank_pattern``), ``lora_alpha`` = rank per module (``alpha_pattern``) so
that PEFT's scaling is 1, and the scalings are folded into B. Optionally each module is
compressed to a chosen rank by SVD (best rank-k approximation) and the error reported.
"""

from __future__ import annotations

import contextlib
import gc
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from xgblora_engine.export.common import Check, Progress, no_progress, release_memory

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class AdapterFactors:
    factors: dict[str, tuple[object, object]]  # module -> (B out×r, A r×in), fp32
    rank: int | None = None  # compression target, None = exact
    errors: dict[str, float] = field(default_factory=dict)  # relative Frobenius error per module
    total_error: float = 0.0  # ‖Δ − Δ'‖ / ‖Δ‖ over all modules together

    @property
    def exact(self) -> bool:
        return self.rank is None or not any(e > 0 for e in self.errors.values())

    def describe(self) -> str:
        ranks = [b.shape[1] for b, _ in self.factors.values()]
        text = f"{len(ranks)} modules, rank {min(ranks, default=0)}–{max(ranks, default=0)}"
        if self.rank is None:
            return text + " (exact: the ledger's factors, scalings folded into B)"
        worst = max(self.errors.values(), default=0.0)
        return (text + f" (compressed to rank ≤ {self.rank} by SVD: relative error {self.total_error:.3g} "
                       f"over all updates, worst module {worst:.3g})")


def adapter_factors(ledger, rank: int | None = None) -> AdapterFactors:
    """Per-module (B, A): exact, or the best rank-``rank`` approximation."""
    import torch

    from xgblora_engine.boosting.merge import compress

    out = AdapterFactors({}, rank)
    err_sq = total_sq = 0.0
    for name in ledger.modules():
        b_cat, a_cat = ledger.factors(name)
        if rank is not None and b_cat.shape[1] > rank:
            norm_sq = float(torch.linalg.matrix_norm(b_cat.double() @ a_cat.double()) ** 2)
            b_cat, a_cat, err = compress(b_cat, a_cat, rank)
            out.errors[name] = err
            err_sq += err * err * norm_sq
            total_sq += norm_sq
        elif rank is not None:
            out.errors[name] = 0.0
            total_sq += float(torch.linalg.matrix_norm(b_cat.double() @ a_cat.double()) ** 2)
        out.factors[name] = (b_cat.contiguous(), a_cat.contiguous())
    out.total_error = (err_sq / total_sq) ** 0.5 if total_sq > 0 else 0.0
    return out


def base_reference(source, cfg) -> str:
    """What ``base_model_name_or_path`` should say: the Hub id or the local path."""
    if source.kind == "hub":
        return source.path
    if source.gguf_file:
        return str(Path(source.path) / source.gguf_file)
    return str(Path(source.path).resolve())


def lora_config(factors: AdapterFactors, base_name: str, fan_in_fan_out: bool):
    from collections import Counter

    from peft import LoraConfig

    ranks = {name: int(b.shape[1]) for name, (b, _) in factors.factors.items()}
    common = Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    # Keys are regular expressions to PEFT: escape the dots so a name matches only itself.
    pattern = {re.escape(n): r for n, r in ranks.items() if r != common}
    return LoraConfig(r=common, lora_alpha=common, target_modules=sorted(ranks), rank_pattern=pattern,
                      alpha_pattern=dict(pattern), lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                      fan_in_fan_out=fan_in_fan_out, base_model_name_or_path=base_name, inference_mode=True)


def write_peft(folder: Path, model, tokenizer, factors: AdapterFactors, source, cfg,
               progress: Progress = no_progress) -> None:
    from safetensors.torch import save_file

    from xgblora_engine.boosting.merge import is_fan_in_fan_out

    progress("peft", "writing the adapter", 0.0)
    fan = any(is_fan_in_fan_out(model.get_submodule(n)) for n in factors.factors)
    config = lora_config(factors, base_reference(source, cfg), fan)
    config.save_pretrained(str(folder))
    tensors = {}
    for name, (b, a) in factors.factors.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(adapter_readme(factors, source, cfg), encoding="utf-8")
    progress("peft", "writing the adapter", 1.0)


def adapter_readme(factors: AdapterFactors, source, cfg) -> str:
    if source.gguf_file:
        load = (f'base = AutoModelForCausalLM.from_pretrained("{source.path}", gguf_file="{source.gguf_file}")')
    else:
        load = f'base = AutoModelForCausalLM.from_pretrained("{base_reference(source, cfg)}")'
    return "\n".join([
        "---", "library_name: peft", "tags: [xgblora, lora]", "---", "",
        f"# XGBLoRA adapter for {source.display_name or cfg.model.name}", "",
        "A standard PEFT LoRA adapter holding every booster an XGBLoRA run merged: per module, "
        "the boosters' factors side by side (rank = sum of their ranks, `rank_pattern`), "
        "`lora_alpha` equal to the rank so PEFT's scaling is 1, the booster scalings folded into "
        f"`lora_B`. {factors.describe()}.", "",
        "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        load, 'model = PeftModel.from_pretrained(base, ".")  # this folder',
        'tokenizer = AutoTokenizer.from_pretrained(".")',
        'messages = [{"role": "user", "content": "What is the capital of France?"}]',
        'ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")',
        "eot = [tokenizer.convert_tokens_to_ids(t) for t in (tokenizer.eos_token, \"<|im_end|>\") "
        "if t in tokenizer.get_vocab()]",
        "out = model.generate(ids, max_new_tokens=128, do_sample=False, eos_token_id=eot)",
        "print(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))", "```", "",
        "`model.merge_and_unload()` gives the merged model (the `hf` export holds it ready-made).", ""])


@contextlib.contextmanager
def compressed_reference(model, ledger, factors: AdapterFactors):
    """Make the merged model (W0 + B·A) compute W0 + B'·A' for the compressed modules, by a
    forward hook adding x·(A'ᵀB'ᵀ − AᵀBᵀ): the model a compressed adapter should reproduce."""
    import torch

    handles = []
    for name, (b_new, a_new) in factors.factors.items():
        if factors.errors.get(name, 0.0) == 0.0:
            continue
        b_old, a_old = ledger.factors(name)

        def hook(module, inputs, output, b_new=b_new, a_new=a_new, b_old=b_old, a_old=a_old):
            x = inputs[0].to(torch.float32)
            fix = x @ a_new.t() @ b_new.t() - x @ a_old.t() @ b_old.t()
            return output + fix.to(output.dtype)

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


PEFT_RTOL = 1e-3  # PEFT computes W0·x + B·(A·x), the merged model (W0 + B·A)·x: rounding only


def verify_peft(folder: Path, cfg, ref, factors: AdapterFactors, base_tokenizer) -> list[Check]:
    """Load the adapter with PEFT on a freshly loaded base, as a user would, and compare."""
    import torch

    from xgblora_engine.export import verify as V
    from xgblora_engine.export.hf import check_tokenizer
    from xgblora_engine.export.merged import load_base

    checks: list[Check] = []
    base, _, _ = load_base(cfg)
    try:
        from peft import PeftModel
        from transformers import AutoTokenizer

        with warnings.catch_warnings():  # PEFT's own deprecation noise, not about this adapter
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(base, str(folder), is_trainable=False).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        del base
        gc.collect()
        return [Check("load with PEFT", False, f"{type(exc).__name__}: {exc}")]
    try:
        checks.append(_check_layers(model, factors))
        checks.append(check_tokenizer(tokenizer, base_tokenizer, ref))
        got = [V.prompt_logits(model, p.ids) for p in ref.prompts]
        against = "the merged model" if factors.exact else "the merged model with the compressed updates"
        checks.append(V.check_logits("logits", got, ref, PEFT_RTOL, against))
        with torch.no_grad():
            runs = [V.greedy(model, p.ids, ref.eot_ids, ref.max_new_tokens)[:2] for p in ref.prompts]
        checks.append(V.check_stops("stops at end of turn", runs, ref, tokenizer, "PEFT"))
    finally:
        del model, base
        release_memory()
    return checks


def _check_layers(model, factors: AdapterFactors) -> Check:
    """Every module got its LoRA layer with the written factors, its rank and scaling 1."""
    from xgblora_engine.export.verify import fingerprint

    problems, found = [], 0
    for name, (b, a) in factors.factors.items():
        try:
            layer = model.base_model.model.get_submodule(name)
        except AttributeError:
            problems.append(f"{name}: not in the model")
            continue
        lora_a = layer.lora_A["default"] if hasattr(layer, "lora_A") and "default" in layer.lora_A else None
        if lora_a is None:
            problems.append(f"{name}: PEFT attached no LoRA layer")
            continue
        found += 1
        if layer.r["default"] != b.shape[1] or abs(layer.scaling["default"] - 1.0) > 1e-12:
            problems.append(f"{name}: rank {layer.r['default']} scaling {layer.scaling['default']:g}, "
                            f"expected rank {b.shape[1]} scaling 1")
        elif fingerprint(lora_a.weight) != fingerprint(a) or fingerprint(layer.lora_B["default"].weight) != fingerprint(b):
            problems.append(f"{name}: loaded factors differ from the written ones")
    extra = [n for n, m in model.base_model.model.named_modules()
             if hasattr(m, "lora_A") and "default" in m.lora_A and n not in factors.factors]
    if extra:
        problems.append(f"{len(extra)} unexpected LoRA layers ({', '.join(extra[:3])})")
    if problems:
        return Check("load with PEFT", False, "; ".join(problems[:5]))
    return Check("load with PEFT", True,
                 f"{found} LoRA layers with the written factors, per-module rank, scaling 1")


def adapter_size(ledger, rank: int | None) -> int:
    n = 0
    for name in ledger.modules():
        b, a = ledger.factors(name)
        r = b.shape[1] if rank is None else min(rank, b.shape[1])
        n += r * (b.shape[0] + a.shape[1]) * 4
    return n
