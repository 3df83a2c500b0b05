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
    supports_system: bool = True  # False: the template refuses system messages

    def render(self, system: str | None, prompt: str) -> str:
        """What the Modelfile's TEMPLATE renders for one turn (Ollama's semantics)."""
        text = self.preamble
        if system and self.supports_system:
            text += self.system_prefix + system + self.system_suffix
        return text + self.user_prefix + prompt + self.user_suffix + self.assistant_prefix


def _render(tokenizer, messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


class NoChatTemplate(Exception):
    pass


def chat_pieces(tokenizer) -> ChatPieces:
    """Split the chat template into per-role prefix/suffix pieces."""
    if not getattr(tokenizer, "chat_template", None):
        raise NoChatTemplate("the tokenizer has no chat template")
    try:
        return _pieces(tokenizer, with_system=True)
    except ValueError:
        raise
    except Exception:  # the template refuses a system message (Gemma's does)
        try:
            return _pieces(tokenizer, with_system=False)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"the chat template cannot be rendered: {exc}") from None


def _pieces(tokenizer, with_system: bool) -> ChatPieces:
    system = [{"role": "system", "content": _S}] if with_system else []
    user, answer = [{"role": "user", "content": _U}], [{"role": "assistant", "content": _A}]
    _U2 = _U + "2"
    base = _render(tokenizer, system + user, False)
    gen = _render(tokenizer, system + user, True)
    full = _render(tokenizer, system + user + answer, False)
    two = _render(tokenizer, system + user + answer + [{"role": "user", "content": _U2}], False)
    if not (gen.startswith(base) and full.startswith(base) and two.startswith(full[:full.index(_A)])):
        raise ValueError("the chat template does not render turn by turn")
    assistant_prefix = gen[len(base):]
    tail = full[len(base):]
    if tail[:tail.index(_A)] != assistant_prefix:
        raise ValueError("the assistant turn does not start with the generation prompt")
    assistant_suffix = tail[tail.index(_A) + len(_A):]
    seg = two[two.index(_A) + len(_A):two.index(_U2)]
    if not seg.startswith(assistant_suffix):
        raise ValueError("a finished assistant turn renders differently before the next user turn")
    user_prefix = seg[len(assistant_suffix):]
    i_u = base.index(_U)
    user_suffix = base[i_u + len(_U):]
    if not base[:i_u].endswith(user_prefix):
        raise ValueError("the first user turn starts differently from the next ones")
    before_user = base[:i_u - len(user_prefix)] if user_prefix else base[:i_u]
    if not with_system:
        return ChatPieces("", "", user_prefix, user_suffix, assistant_prefix, assistant_suffix, None,
                          before_user, supports_system=False)
    i_s = before_user.index(_S)
    system_prefix, system_suffix = before_user[:i_s], before_user[i_s + len(_S):]
    # Rendered without a system message, the text before the user turn is either a
    # preamble (e.g. a BOS token) or a default system turn the template inserts.
    only = _render(tokenizer, user, False)
    head = only[:only.index(_U)]
    head = head[:len(head) - len(user_prefix)] if user_prefix else head
    preamble, default_system = "", None
    if head and head.startswith(system_prefix) and head.endswith(system_suffix) \
            and len(head) > len(system_prefix) + len(system_suffix):
        default_system = head[len(system_prefix):len(head) - len(system_suffix)]
    elif system_prefix.startswith(head):
        preamble, system_prefix = head, system_prefix[len(head):]
    else:
        raise ValueError("the text before the first user turn changes with the system message")
    return ChatPieces(system_prefix, system_suffix, user_prefix, user_suffix, assistant_prefix,
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
        if tok in pieces.assistant_suffix and tok not in found:
            found.insert(0, tok)
    return found


def modelfile(gguf_file: str, pieces: ChatPieces, tokenizer, model_config, generation_config=None) -> str:
    p = {k: _go_literal(v) for k, v in vars(pieces).items() if isinstance(v, str)}
    system = (f"{{{{ if .System }}}}{p['system_prefix']}{{{{ .System }}}}{p['system_suffix']}{{{{ end }}}}"
              if pieces.supports_system else "")
    template = (f"{p['preamble']}{system}"
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


def write_modelfile(folder: Path, gguf_file: str, tokenizer, model) -> ChatPieces:
    """The Modelfile; without a chat template (a base model) just FROM and the defaults,
    then NoChatTemplate is raised for the caller to report."""
    try:
        pieces = chat_pieces(tokenizer)
    except NoChatTemplate:
        ctx = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
        (folder / "Modelfile").write_text(f"FROM ./{gguf_file}\n\nPARAMETER temperature 0.3\n"
                                          f"PARAMETER num_ctx {min(ctx, 4096)}\n", encoding="utf-8")
        raise
    (folder / "Modelfile").write_text(modelfile(gguf_file, pieces, tokenizer, model.config,
                                                getattr(model, "generation_config", None)), encoding="utf-8")
    return pieces


def check_modelfile(folder: Path, tokenizer) -> Check:
    """The Modelfile's TEMPLATE/SYSTEM reproduce the chat template for one-turn chats, with and
    without a system prompt, and it stops at the end-of-turn token."""
    text = (folder / "Modelfile").read_text(encoding="utf-8")
    try:
        pieces = chat_pieces(tokenizer)
    except (ValueError, NoChatTemplate) as exc:
        return Check("Modelfile template", False, str(exc))
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S)
    system = re.search(r'SYSTEM """(.*?)"""', text, re.S)
    if template is None:
        return Check("Modelfile template", False, "no TEMPLATE in the Modelfile")
    rendered = _render_go(template.group(1), system.group(1) if system else None)
    problems = []
    for sys_prompt in (None, "You answer in one word.") if pieces.supports_system else (None,):
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
    cases = "with and without a system prompt" if pieces.supports_system else "the template takes no system prompt"
    return Check("Modelfile template", True, "TEMPLATE and SYSTEM render exactly the tokenizer's chat template "
                                             f"({cases}); stops at {', '.join(stops)}")


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
