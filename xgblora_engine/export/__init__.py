"""Export a run: merged Hugging Face checkpoint, PEFT adapter, GGUF, Ollama model, each
written atomically and verified in its own runtime; and trying a model from the terminal.

    export_run(run_dir, out, ["hf", "gguf"], dtype="auto", quant="f16", verify=True,
               progress=callback) -> list[ExportResult]
    generate(model_or_run_dir, prompt, max_new_tokens) -> (text, n_tokens, seconds, stopped)

Plain Python, no Qt: the worker calls these and turns ``progress(format, stage, fraction)``
and the results into ExportProgress / ExportDone events.
"""

from xgblora_engine.export.chat import generate
from xgblora_engine.export.common import FORMATS, Check, ExportResult, end_of_turn_ids
from xgblora_engine.export.merged import load_merged
from xgblora_engine.export.run import export_run

__all__ = ["FORMATS", "Check", "ExportResult", "end_of_turn_ids", "export_run", "generate",
           "load_merged"]
