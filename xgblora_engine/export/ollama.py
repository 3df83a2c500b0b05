"""An Ollama model: the GGUF file plus a Modelfile whose TEMPLATE reproduces the
tokenizer's chat template, with its end-of-turn stop tokens and default system prompt.

The TEMPLATE is derived from the chat template itself, not from a table: the template is
rendered with marker strings in each role, and the text around each marker becomes the
role's prefix and suffix. The Modelfile is then checked by rendering its TEMPLATE (the
same pieces, in Ollama's System/Prompt/Response form) for a few conversations and
comparing with ``tokenizer.apply_chat_template`` character for character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from xgblora_engine.export.common import Check

_S, _U, _A = "\x01SYSTEM\x02", "\x01USER\x02", "\x01ANSWER\x02"


@dataclass
class ChatPieces:
    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str  # the generation prompt
    assistant_suffix: str
    default_system: str | None  # what the template inserts when no system message is given
    preamble: str = ""  # text before the first message (e.g. a BOS token)

    def render(self, system: str | None, prompt: str) -> str:
        """What the Modelfile's TEMPLATE renders for one turn (Ollama's semantics)."""
        text = self.preamble
        if system:
            text += self.system_prefix + system + self.system_suffix
        return text + self.user_prefix + prompt + self.user_suffix + self.assistant_prefix


def _render(tokenizer, messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def chat_pieces(tokenizer) -> ChatPieces:
    """Split the chat template into per-role prefix/suffix pieces."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template")
    sys_user = _render(tokenizer, [{"role": "system", "content": _S}, {"role": "user", "content": _U}], False)
    with_gen = _render(tokenizer, [{"role": "system", "content": _S}, {"role": "user", "content": _U}], True)
    full = _render(tokenizer, [{"role": "system", "content": _S}, {"role": "user", "content": _U},
                               {"role": "assistant", "content": _A}], False)
    if not with_gen.startswith(sys_user) or not full.startswith(sys_user):
        raise ValueError("the chat template does not render turn by turn")
    i_s, i_u = sys_user.index(_S), sys_user.index(_U)
    before_sys, between = sys_user[:i_s], sys_user[i_s + len(_S):i_u]
    after_user = sys_user[i_u + len(_U):]
    assistant_prefix = with_gen[len(sys_user):]
    tail = full[len(sys_user):]
    i_a = tail.index(_A)
    if tail[:i_a] != assistant_prefix:
        raise ValueError("the assistant turn does not start with the generation prompt")
    assistant_suffix = tail[i_a + len(_A):]
    # The user turn's own prefix: what follows a finished assistant turn.
    _U2 = _U + "2"
    two = _render(tokenizer, [{"role": "system", "content": _S}, {"role": "user", "content": _U},
                              {"role": "assistant", "content": _A}, {"role": "user", "content": _U2}], False)
    seg = two[two.index(_A) + len(_A):two.index(_U2)]
    if not seg.startswith(assistant_suffix) or not between.endswith(seg[len(assistant_suffix):]):
        raise ValueError("cannot tell where the system turn ends and the user turn starts")
    user_prefix = seg[len(assistant_suffix):]
    system_suffix = between[:len(between) - len(user_prefix)]
    user_only = _render(tokenizer, [{"role": "user", "content": _U}], False)
    user_start = user_only[:user_only.index(_U)]
    preamble, default_system = "", None
    system_prefix = before_sys
    # The user-only rendering is either  preamble + user_prefix  or  a default system turn + it.
    head = user_start[:len(user_start) - len(user_prefix)]
    if head.startswith(system_prefix) and head.endswith(system_suffix) and len(head) >= len(system_prefix) + len(system_suffix) and head:
        default_system = head[len(system_prefix):len(head) - len(system_suffix)]
        if not default_system:
            default_system = None
    elif system_prefix.startswith(head):
        preamble, system_prefix = head, system_prefix[len(head):]
    return ChatPieces(system_prefix, system_suffix, user_prefix, after_user, assistant_prefix,
                      assistant_suffix, default_system, preamble)


def _go_literal(text: str) -> str:
    if "{{" in text or '"""' in text:
        raise ValueError("the chat template's markup cannot be written into a Modelfile")
    return text


def stop_tokens(pieces: ChatPieces, tokenizer) -> list[str]:
    """Special tokens that end a turn or start the next one."""
    special = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
    found = []
    for piece in (pieces.assistant_suffix, pieces.user_prefix, pieces.system_prefix):
        for tok in sorted(special, key=len, reverse=True):
            if tok and tok in piece and tok not in found and "\n" not in tok:
                found.append(tok)
    from xgblora_engine.export.common import END_OF_TURN_TOKENS

    for tok in END_OF_TURN_TOKENS:
        if tok in special and tok in pieces.assistant_suffix and tok not in found:
            found.insert(0, tok)
    return found


def modelfile(gguf_file: str, pieces: ChatPieces, tokenizer, model_config, generation_config=None) -> str:
    p = {k: _go_literal(v) for k, v in vars(pieces).items() if isinstance(v, str)}
    template = (f"{p['preamble']}{{{{ if .System }}}}{p['system_prefix']}{{{{ .System }}}}{p['system_suffix']}{{{{ end }}}}"
                f"{{{{ if .Prompt }}}}{p['user_prefix']}{{{{ .Prompt }}}}{p['user_suffix']}{{{{ end }}}}"
                f"{p['assistant_prefix']}{{{{ .Response }}}}{p['assistant_suffix']}")
    ctx = int(getattr(model_config, "max_position_embeddings", 4096) or 4096)
    temperature = getattr(generation_config, "temperature", None) if getattr(generation_config, "do_sample", False) else None
    lines = [f"FROM ./{gguf_file}", "", f'TEMPLATE """{template}"""', ""]
    if pieces.default_system:
        lines += [f'SYSTEM """{_go_literal(pieces.default_system)}"""', ""]
    lines += [f'PARAMETER stop "{tok}"' for tok in stop_tokens(pieces, tokenizer)]
    lines += [f"PARAMETER temperature {temperature if temperature is not None else 0.3:g}",
              "PARAMETER top_p 0.9", "PARAMETER repeat_penalty 1.1",
              f"PARAMETER num_ctx {min(ctx, 4096)}", ""]
    return "\n".join(lines)


def ollama_name(out: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", out.name.lower()).strip("-._")
    return name or "xgblora-model"


def create_command(folder: Path, name: str) -> str:
    return f"ollama create {name} -f {folder / 'Modelfile'}"


def write_modelfile(folder: Path, gguf_file: str, tokenizer, model) -> ChatPieces:
    pieces = chat_pieces(tokenizer)
    (folder / "Modelfile").write_text(modelfile(gguf_file, pieces, tokenizer, model.config,
                                                getattr(model, "generation_config", None)), encoding="utf-8")
    return pieces


def check_modelfile(folder: Path, tokenizer) -> Check:
    """The Modelfile's TEMPLATE/SYSTEM reproduce the chat template for one-turn chats, with and
    without a system prompt, and it stops at the end-of-turn token."""
    text = (folder / "Modelfile").read_text(encoding="utf-8")
    try:
        pieces = chat_pieces(tokenizer)
    except ValueError as exc:
        return Check("Modelfile template", False, str(exc))
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S)
    system = re.search(r'SYSTEM """(.*?)"""', text, re.S)
    if template is None:
        return Check("Modelfile template", False, "no TEMPLATE in the Modelfile")
    rendered = _render_go(template.group(1), system.group(1) if system else None)
    problems = []
    for sys_prompt in (None, "You answer in one word."):
        for prompt in ("What is the capital of France?", "Name three primary colors."):
            messages = ([{"role": "system", "content": sys_prompt}] if sys_prompt else []) + [
                {"role": "user", "content": prompt}]
            want = _render(tokenizer, messages, True)
            got = rendered(sys_prompt, prompt)
            if got != want:
                problems.append(f"{'with' if sys_prompt else 'without'} a system prompt: {got!r} ≠ {want!r}")
    stops = re.findall(r'PARAMETER stop "(.*?)"', text)
    from xgblora_engine.export.common import END_OF_TURN_TOKENS

    eot = [t for t in END_OF_TURN_TOKENS if t in pieces.assistant_suffix]
    if eot and not any(t in stops for t in eot):
        problems.append(f"no stop parameter for {eot[0]}")
    if problems:
        return Check("Modelfile template", False, "; ".join(problems[:2]))
    return Check("Modelfile template", True, "TEMPLATE and SYSTEM render exactly the tokenizer's chat template "
                                             f"(with and without a system prompt); stops at {', '.join(stops)}")


def _render_go(template: str, default_system: str | None):
    """Evaluate the few constructs the generated TEMPLATE uses, as Ollama does for one turn:
    ``.System`` falls back to the Modelfile's SYSTEM, and the prompt ends at ``.Response``."""
    marker = "\x00RESPONSE\x00"

    def render(system: str | None, prompt: str) -> str:
        full = _render_go_raw(template.replace("{{ .Response }}", marker),
                              system if system else (default_system or ""), prompt)
        return full.split(marker)[0]

    return render


def _render_go_raw(template: str, system: str, prompt: str) -> str:
    values = {"System": system, "Prompt": prompt}
    text = re.sub(r"\{\{ if \.(\w+) \}\}(.*?)\{\{ end \}\}",
                  lambda m: m.group(2) if values[m.group(1)] else "", template, flags=re.S)
    return re.sub(r"\{\{ \.(\w+) \}\}", lambda m: values[m.group(1)], text)
