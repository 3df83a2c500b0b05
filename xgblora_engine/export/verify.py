"""Verification: reload an export in its target runtime and compare it with the merged
model it came from, on fixed prompts.

The reference is taken from the in-memory merged model before anything is written: the
logits at every position of each prompt and its greedy continuation (with the top-1/top-2
margin at each step). Exports are then checked against it once the merged model is gone,
so a check never needs two copies of the model in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from xgblora_engine.export.common import Check, chat_ids, end_of_turn_ids

# Short questions a chat model answers in a few tokens and then ends its turn.
# Chosen on SmolLM2-135M: short answers, and greedy decoding far from near-ties both on the
# base and after a short fine-tune ("What is the capital of France?" is a near-tie at its
# first token, margin 0.08, and a 20-step fine-tune tips it into rambling).
VERIFY_PROMPTS = (
    "How many days are in a week?",
    "Name three primary colors.",
    "What is 10 divided by 2?",
)
MAX_NEW_TOKENS = 128
# Logit tolerance relative to the largest reference logit (at least 1), by weight dtype.
# The reload has bit-identical weights, but CPU kernels do not promise bit-identical sums
# from one process to the next: 1.3e-4 was seen once on SmolLM2 in fp32 (0 usually).
LOGIT_RTOL = {"fp32": 1e-3, "fp16": 5e-3, "bf16": 2e-2}


@dataclass
class PromptReference:
    prompt: str
    text: str  # the prompt rendered with the chat template
    ids: list[int]
    logits: object  # torch.Tensor (len(ids), vocab), fp32: logits at every prompt position
    greedy: list[int] = field(default_factory=list)  # greedy continuation, end-of-turn included
    stopped: bool = False
    margins: list[float] = field(default_factory=list)  # top-1 minus top-2 logit at each step
    fp32_logits: object = None  # for a 16-bit reference: the fp32 merged model's logits


@dataclass
class Reference:
    prompts: list[PromptReference]
    eot_ids: list[int]
    max_new_tokens: int
    dtype: str = "fp32"
    chat: bool = True  # the tokenizer has a chat template (there is an end of turn to stop at)

    def scale(self) -> float:
        return max([1.0] + [float(p.logits.abs().max()) for p in self.prompts])


def prompt_text(tokenizer, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def prompt_logits(model, ids: list[int]):
    import torch

    from xgblora_engine.boosting.loss import input_device

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids], device=input_device(model))).logits[0].float().cpu()


def greedy(model, ids: list[int], eot_ids: list[int], max_new_tokens: int,
           use_model_config: bool = False) -> tuple[list[int], bool, list[float]]:
    """Greedy continuation: (new token ids, stopped at an end-of-turn token, margins).

    ``use_model_config``: stop at the ids the model's own generation_config names (what a
    user of the export gets) instead of ``eot_ids``."""
    import torch
    from transformers import GenerationConfig

    from xgblora_engine.boosting.loss import input_device

    device = input_device(model)
    if use_model_config:
        cfg = GenerationConfig.from_dict(model.generation_config.to_dict())
        cfg.update(do_sample=False, max_new_tokens=max_new_tokens, temperature=None, top_p=None, top_k=None)
    else:
        cfg = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eot_ids,
                               pad_token_id=eot_ids[0] if eot_ids else None)
    cfg.update(output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids], device=device), generation_config=cfg,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device))
    new = out.sequences[0, len(ids):].tolist()
    stops = cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
    stopped = bool(new) and new[-1] in stops
    margins = []
    for step_logits in out.logits:
        top = step_logits[0].float().topk(2).values
        margins.append(float(top[0] - top[1]))
    return new, stopped, margins


def compute_reference(model, tokenizer, prompts=VERIFY_PROMPTS, max_new_tokens: int = MAX_NEW_TOKENS,
                      dtype: str = "fp32", with_generation: bool = True) -> Reference:
    eot = end_of_turn_ids(tokenizer)
    refs = []
    for prompt in prompts:
        ids = chat_ids(tokenizer, prompt)
        ref = PromptReference(prompt, prompt_text(tokenizer, prompt), ids, prompt_logits(model, ids))
        if with_generation:
            ref.greedy, ref.stopped, ref.margins = greedy(model, ids, eot, max_new_tokens)
        refs.append(ref)
    return Reference(refs, eot, max_new_tokens, dtype, bool(getattr(tokenizer, "chat_template", None)))


# --- checks ---------------------------------------------------------------------
def check_logits(name: str, got: list, ref: Reference, rtol: float, against: str) -> Check:
    """Max |Δlogit| over every position of every prompt, against a tolerance scaled by
    the largest reference logit."""
    scale = ref.scale()
    worst, where = 0.0, ""
    for g, p in zip(got, ref.prompts):
        if tuple(g.shape) != tuple(p.logits.shape):
            return Check(name, False, f"logits of shape {tuple(g.shape)} for {p.prompt!r}, "
                                      f"expected {tuple(p.logits.shape)}")
        diff = float((g.float() - p.logits).abs().max())
        if not diff <= worst:  # also catches NaN
            worst, where = diff, p.prompt
    tol = rtol * scale
    ok = worst <= tol
    detail = (f"max |Δlogit| {worst:.3g} vs {against} (tolerance {tol:.3g}) over {len(got)} prompts"
              + ("" if ok else f"; worst on {where!r}"))
    return Check(name, ok, detail)


def check_stops(name: str, runs: list[tuple[list[int], bool]], ref: Reference, tokenizer,
                runtime: str) -> Check:
    """Greedy answers end at an end-of-turn token within the length limit.

    Fails where the merged model in memory ends its answer and the export does not (a wrong
    eos, template or tokenizer, or quantization drift: the export's fault), and when no
    answer ends at all. A prompt the merged model itself answers past the limit is noted,
    not failed: that is the fine-tuned model, faithfully exported."""
    if not ref.chat:
        return Check(name, True, "skipped: the tokenizer has no chat template, so there is no end of "
                                 "turn to stop at (a base model continues text)", skipped=True)
    bad, rambling = [], []
    for (new, stopped), p in zip(runs, ref.prompts):
        if stopped:
            continue
        text = f"{p.prompt!r} ran to the {ref.max_new_tokens}-token limit: {_clip(tokenizer.decode(new))!r}"
        model_also = bool(p.greedy) and not p.stopped
        (rambling if model_also else bad).append(text)
    n_stopped = sum(stopped for _, stopped in runs)
    note = ("; the merged model in memory does not end these answers either (the fine-tuned model, "
            "not the export): " + "; ".join(rambling)) if rambling else ""
    if bad:
        return Check(name, False, f"{runtime} does not end answers the merged model ends: "
                                  + "; ".join(bad) + note)
    if n_stopped == 0:
        return Check(name, False, f"{runtime}: no answer ends at an end-of-turn token within "
                                  f"{ref.max_new_tokens} tokens{note}. Was the end-of-turn token part "
                                  "of the training targets?")
    lengths = ", ".join(str(len(new)) for new, stopped in runs if stopped)
    return Check(name, True, f"{runtime}: {n_stopped}/{len(runs)} answers end at the end-of-turn token "
                             f"(lengths {lengths} ≤ {ref.max_new_tokens}){note}")


def check_same_greedy(name: str, runs: list[list[int]], ref: Reference, tokenizer, tie: list[float],
                      runtime: str) -> Check:
    """The runtime's greedy tokens equal the reference's. A divergence is accepted only at a
    near-tie: where the reference's top-2 margin is within twice the logit error the runtime
    showed on that prompt (tokens that close may legitimately swap)."""
    notes, bad = [], []
    for new, p, d in zip(runs, ref.prompts, tie):
        if new == p.greedy:
            continue
        j = next((i for i, (a, b) in enumerate(zip(new, p.greedy)) if a != b), min(len(new), len(p.greedy)))
        margin = p.margins[j] if j < len(p.margins) else float("inf")
        where = (f"{p.prompt!r} diverges at token {j + 1}: {runtime} {_clip(tokenizer.decode(new[j:j + 8]))!r} "
                 f"vs transformers {_clip(tokenizer.decode(p.greedy[j:j + 8]))!r} (reference margin {margin:.3g})")
        (notes if margin <= 2 * d else bad).append(where)
    if bad:
        return Check(name, False, "; ".join(bad))
    same = len(runs) - len(notes)
    detail = f"{same}/{len(runs)} answers token-for-token identical to transformers"
    if notes:
        detail += "; near-tie divergences: " + "; ".join(notes)
    return Check(name, True, detail)


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n] + "…"


# --- weight fingerprints ---------------------------------------------------------
def fingerprint(tensor) -> str:
    import torch

    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    # hashed in place (no bytes copy): a tensor as large as an embedding would otherwise
    # exist twice while it is fingerprinted
    return hashlib.blake2b(t.view(torch.uint8).numpy().data, digest_size=16).hexdigest()


def tensor_fingerprint(tensor) -> tuple[tuple[int, ...], str, str]:
    """(shape, dtype, hash of the bytes)."""
    return tuple(tensor.shape), str(tensor.dtype), fingerprint(tensor)


def fingerprints(model) -> dict[str, tuple[tuple[int, ...], str, str]]:
    """name -> tensor_fingerprint for every tensor in the state dict."""
    return {name: tensor_fingerprint(t) for name, t in model.state_dict().items()}


def check_fingerprints(name: str, expected: dict, got) -> Check:
    """``got``: the reloaded tensors by name (a state dict, or any mapping that reads them)."""
    missing = [k for k in expected if k not in got]
    wrong = []
    for key, want in expected.items():
        if key in got and tensor_fingerprint(got[key]) != want:
            wrong.append(key)
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing ({', '.join(missing[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} tensors differ from the merged model ({', '.join(wrong[:3])})")
        return Check(name, False, "; ".join(parts))
    return Check(name, True, f"all {len(expected)} tensors bit-identical to the merged model")
