"""The one command per export that the CLI prints and the app offers to copy: it uses the
export where it stands, and works when pasted into a shell (the tests run each one as
printed). Paths are JSON string literals inside the Python code, which has no single
quotes of its own, so the shell quoting around it stays readable.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

ASK = '[{"role": "user", "content": "What is the capital of France?"}]'


def _answer(model: str, tokenizer: str) -> str:
    """Python that prints the model's greedy answer to a chat message."""
    return (f'from transformers import pipeline; p = pipeline("text-generation", model={model}, '
            f'tokenizer={tokenizer}); print(p({ASK}, max_new_tokens=32, do_sample=False)[0]'
            '["generated_text"][-1]["content"])')


def _python(code: str) -> str:
    return f"python -c {shlex.quote(code)}"


def hf_command(folder: Path) -> str:
    path = json.dumps(str(folder))
    return _python(_answer(path, path))


def peft_command(folder: Path, source) -> str:
    """Loads the base the adapter was trained on (a .gguf through transformers' GGUF
    loader), puts the adapter on it and answers."""
    base = json.dumps(str(source.path) if source.kind == "hub" else str(Path(source.path).resolve()))
    gguf = f", gguf_file={json.dumps(source.gguf_file)}" if source.gguf_file else ""
    adapter = json.dumps(str(folder))
    return _python("from peft import PeftModel; from transformers import AutoModelForCausalLM; "
                   f"base = AutoModelForCausalLM.from_pretrained({base}{gguf}); "
                   f"model = PeftModel.from_pretrained(base, {adapter}); " + _answer("model", adapter))


def gguf_command(file: Path) -> str:
    return f"llama-cli -m {shlex.quote(str(file))} -cnv"


def ollama_command(folder: Path, name: str) -> str:
    """``name`` is already what ``ollama create`` accepts (rundir.ollama_name)."""
    return f"ollama create {name} -f {shlex.quote(str(folder / 'Modelfile'))}"
