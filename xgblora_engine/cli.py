"""`xgblora` — the engine's command line.

    xgblora train  [--config run.yaml] [--model M] [--data D] ... [--out RUN_DIR]
    xgblora export RUN_DIR [--out DIR] [--format hf,peft,gguf,ollama]

A config file and flags are the same settings; flags win. Every user error exits
with status 2 and one message (plus a hint), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from xgblora_engine import __version__
from xgblora_engine.config import (
    DTYPES,
    FORMATS,
    INITS,
    LR_RULES,
    QUANTIZE,
    REPORT_TO,
    SAMPLING,
    SECTIONS,
    TRAIN_ON,
    RunConfig,
    load_config_file,
    update,
)
from xgblora_engine.errors import UserError
from xgblora_engine.payloads import GGUF_TYPES

# flag -> (section, setting). Help texts come from the config dataclasses.
TRAIN_FLAGS: dict[str, tuple[str, str]] = {
    "--model": ("model", "name"),
    "--dtype": ("model", "dtype"),
    "--quantize": ("model", "quantize"),
    "--device": ("model", "device"),
    "--shard-gpus": ("model", "shard_gpus"),
    "--gradient-checkpointing": ("model", "gradient_checkpointing"),
    "--target-modules": ("model", "target_modules"),
    "--data": ("data", "path"),
    "--eval-data": ("data", "eval_path"),
    "--eval-fraction": ("data", "eval_fraction"),
    "--format": ("data", "format"),
    "--columns": ("data", "columns"),
    "--seq-len": ("data", "seq_len"),
    "--train-on": ("data", "train_on"),
    "--rank": ("boost", "rank"),
    "--alpha": ("boost", "alpha"),
    "--dropout": ("boost", "dropout"),
    "--layers-per-round": ("boost", "layers_per_round"),
    "--layers": ("boost", "layers"),
    "--merge-every": ("boost", "merge_every"),
    "--sampling": ("boost", "sampling"),
    "--booster-init": ("boost", "init"),
    "--init-pool": ("boost", "init_pool"),
    "--carry": ("boost", "carry"),
    "--carry-b": ("boost", "carry_b"),
    "--line-search": ("boost", "line_search"),
    "--max-steps": ("train", "max_steps"),
    "--lr": ("train", "lr"),
    "--batch-size": ("train", "batch_size"),
    "--grad-accum": ("train", "grad_accum"),
    "--round-warmup": ("train", "round_warmup"),
    "--lr-rule": ("train", "lr_rule"),
    "--lr-ratio-b": ("train", "lr_ratio_b"),
    "--eval-every": ("train", "eval_every"),
    "--samples": ("train", "samples"),
    "--sample-tokens": ("train", "sample_tokens"),
    "--report-to": ("train", "report_to"),
    "--seed": ("train", "seed"),
}


def _help_of(section: str, key: str) -> str:
    f = {f.name: f for f in dataclasses.fields(SECTIONS[section])}[key]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    # argparse formats help with %: a literal one ("~30% slower") must be doubled
    return f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")


# settings whose values are one of a few words: their metavar lists them
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("model", "dtype"): DTYPES, ("model", "quantize"): QUANTIZE, ("data", "format"): FORMATS,
    ("data", "train_on"): TRAIN_ON, ("boost", "sampling"): tuple(s for s in SAMPLING if s != "explicit"), ("boost", "init"): INITS,
    ("train", "lr_rule"): LR_RULES, ("train", "schedule"): ("cosine", "constant"), ("train", "report_to"): REPORT_TO,
}
METAVARS = {"name": "MODEL", "path": "PATH", "eval_path": "PATH", "columns": "FIELD=COLUMN,...",
            "target_modules": "NAME,...", "layers": "I,J,...", "device": "DEVICE", "lr": "RATE",
            "alpha": "X", "dropout": "P", "eval_fraction": "P", "lr_ratio_b": "X"}


def _metavar(section: str, key: str) -> str:
    """What the user types: the choices, or a word for the kind of value, never the key."""
    if (section, key) in CHOICES:
        return "{" + ",".join(CHOICES[section, key]) + "}"
    return METAVARS.get(key, "N")


def _is_switch(section: str, key: str) -> bool:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}[key].type == "bool"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: same one-line style, exit 2
        raise UserError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xgblora", description="Fine-tune language models with XGBLoRA.")
    parser.add_argument("--version", action="version", version=f"xgblora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="fine-tune a model", description="Fine-tune a model with XGBLoRA.")
    train.add_argument("--out", metavar="DIR", help="run folder to create (default: a new folder in the app's data dir)")
    _add_settings(train)
    _add_run_options(train)

    estimate = sub.add_parser("estimate", help="predict whether a run fits in memory",
                              description="Memory preflight: analytic estimate, measured trial and verdict.")
    _add_settings(estimate)
    estimate.add_argument("--no-trial", action="store_true", help="skip the measured trial (analytic estimate only)")
    estimate.add_argument("--memory-limit", metavar="SIZE", help="treat this as the usable memory, e.g. 6GB")

    resume = sub.add_parser("resume", help="continue a stopped, crashed or killed run")
    resume.add_argument("run_dir", type=named_run_arg, help="the run folder, or its name as `xgblora runs` lists it")
    _add_run_options(resume)

    export = sub.add_parser("export", help="write a merged model, adapter, GGUF or Ollama model from a run",
                            description="Export a run and verify the export in its own runtime.")
    export.add_argument("run_dir", type=named_run_arg, help="the run folder, or its name as `xgblora runs` lists it")
    export.add_argument("--out", metavar="DIR",
                        help="folder to create (with several formats: one sub-folder per format); default: a new "
                             "folder in the run's exports/ named FORMAT-N, so exporting again never collides")
    export.add_argument("--ollama-name", metavar="NAME",
                        help="the model name `ollama create` gets (default: the run folder's name)")
    export.add_argument("--format", default="hf", metavar="FORMAT[,FORMAT...]",
                        help="hf (merged safetensors), peft (LoRA adapter), gguf (llama.cpp), ollama "
                             "(GGUF + Modelfile); several separated by commas (default: hf)")
    export.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="dtype of the hf weights (auto: the base checkpoint's)")
    export.add_argument("--quant", default="f16", choices=GGUF_TYPES,
                        help="GGUF tensor type for gguf/ollama (default: f16)")
    export.add_argument("--peft-rank", type=int, default=None, metavar="N",
                        help="compress the adapter to this rank per module by SVD (default: exact)")
    export.add_argument("--push", metavar="REPO",
                        help="then upload the verified exports to this Hugging Face Hub repository (NAME or "
                             "OWNER/NAME; private unless --public; needs `hf auth login` or a token in $HF_TOKEN)")
    export.add_argument("--public", action="store_true", help="with --push: make the repository public")
    export.add_argument("--no-verify", action="store_true",
                        help="skip reloading the export in its runtime and comparing (not recommended)")

    runs = sub.add_parser("runs", help="list runs, or compare some side by side",
                          description="List the runs in the runs folder; with run names or folders, compare "
                                      "them: their table row, the settings that differ, and their final scores.")
    runs.add_argument("runs", nargs="*", metavar="RUN", help="run names (in the runs folder) or run folders")
    runs.add_argument("--root", metavar="DIR", help="the runs folder (default: the app's, as `train` uses)")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")

    chat = sub.add_parser("chat", help="try a model or a run's fine-tuned model in the terminal",
                          description="Chat with a model or a run: a conversation rendered with the model's chat "
                                      "template, answers printed as they are generated (Ctrl-C stops one); "
                                      "/reset, /system TEXT and /exit are commands. With --prompt: one answer.")
    chat.add_argument("model", help="a run folder (its merged model), 'default', a model folder, a .gguf file or a Hub id")
    chat.add_argument("--prompt", metavar="TEXT", help="answer this one prompt and exit")
    chat.add_argument("--compare", action="store_true", help="answer with the run's base model too")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="length limit of an answer (default: 256)")
    chat.add_argument("--temperature", type=float, default=0.0, metavar="T",
                      help="sampling temperature; 0 answers greedily (default: 0)")
    chat.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (default: 1)")
    chat.add_argument("--seed", type=int, default=0, metavar="N", help="sampling seed (default: 0)")
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-processes", type=int, default=1, metavar="N",
                        help="data-parallel processes on this machine (one per GPU); the per-process batch "
                             "is --batch-size, the effective batch is batch × processes × accumulation")
    parser.add_argument("--stop-after", type=int, metavar="N", help="stop (as the stop command does) after N optimizer steps")
    parser.add_argument("--force", action="store_true", help="start even if the memory preflight says it will not fit")
    parser.add_argument("--memory-limit", metavar="SIZE", help="treat this as the usable memory, e.g. 6GB")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML file with sections model/data/boost/train")
    for flag, (section, key) in TRAIN_FLAGS.items():
        if _is_switch(section, key):
            parser.add_argument(flag, dest=f"{section}.{key}", action=argparse.BooleanOptionalAction,
                                default=None, help=_help_of(section, key))
        else:
            parser.add_argument(flag, dest=f"{section}.{key}", default=None, metavar=_metavar(section, key),
                                help=_help_of(section, key))


def config_from_args(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig()
    if args.config:
        update(cfg, load_config_file(args.config), source=args.config)
    flags: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, key = dest.split(".", 1)
            flags.setdefault(section, {})[key] = value
    typed = {f"{section}.{key}": flag for flag, (section, key) in TRAIN_FLAGS.items()}
    return update(cfg, flags, source="command line", names=typed).validate()


def _memory_limit(args: argparse.Namespace) -> int | None:
    from xgblora_engine.memory import parse_size

    return parse_size(args.memory_limit) if args.memory_limit else None


def _distributed(args: argparse.Namespace, argv: list[str]) -> int | None:
    """Launch the ranks (--num-processes N), or run as one rank of a launched group."""
    from xgblora_engine.distributed import launch, launched_distributed

    if launched_distributed():
        return _run_as_rank(args)
    if args.num_processes > 1:
        return launch(argv, args.num_processes)
    return None


def _run_as_rank(args: argparse.Namespace) -> int:
    from xgblora_engine.distributed import Distributed
    from xgblora_engine.progress import ConsoleReporter
    from xgblora_engine.session import Options, resume_training, run_training

    dist = Distributed()
    options = Options(force=args.force, stop_after=args.stop_after, memory_limit=_memory_limit(args), dist=dist)
    try:
        with ConsoleReporter() as reporter:
            emit = reporter if dist.is_main else (lambda event: None)
            if args.command == "resume":
                resume_training(args.run_dir, emit, options=options)
            else:
                cfg = config_from_args(args)
                if str(dist.device).startswith("cuda"):
                    cfg.model.device = str(dist.device)
                run_training(cfg, args.out, emit, options=options)
    finally:
        dist.close()
    return 0


def _check_parallelism(cfg: RunConfig, args: argparse.Namespace) -> None:
    """Before any rank is launched: one message, not one per rank."""
    from xgblora_engine.models.sharding import check_not_data_parallel

    check_not_data_parallel(cfg.model.shard_gpus, args.num_processes)


def cmd_train(args: argparse.Namespace) -> int:
    from xgblora_engine import protocol as P

    cfg = config_from_args(args)
    _check_parallelism(cfg, args)
    code = _distributed(args, sys.argv[1:] if args.argv is None else args.argv)
    if code is not None:
        return code
    return drive(P.StartRun(config=cfg, run_dir=args.out, force=args.force, stop_after=args.stop_after,
                            memory_limit_bytes=_memory_limit(args)))


def named_run_arg(spec: str) -> str:
    """A run folder, or a run's name in the runs folder, as the folder's path."""
    from xgblora_engine.rundir import named_run

    return str(named_run(spec))


def cmd_resume(args: argparse.Namespace) -> int:
    from xgblora_engine import protocol as P
    from xgblora_engine.rundir import RunDir

    if args.num_processes > 1:
        run = RunDir.open(args.run_dir)
        _check_parallelism(RunConfig.from_dict(load_config_file(run.config_path)), args)
    code = _distributed(args, sys.argv[1:] if args.argv is None else args.argv)
    if code is not None:
        return code
    return drive(P.ResumeRun(run_dir=args.run_dir, force=args.force, stop_after=args.stop_after,
                             memory_limit_bytes=_memory_limit(args)))


def cmd_estimate(args: argparse.Namespace) -> int:
    from xgblora_engine import protocol as P

    cfg = config_from_args(args)
    return drive(P.Estimate(config=cfg, trial=not args.no_trial, memory_limit_bytes=_memory_limit(args)))


EXIT_CODES = {"user": 2, "oom": 3}


def drive(command) -> int:
    """Run one command in a worker process, drawing its events on the terminal.

    The CLI and the app share this path: the engine always runs in a worker."""
    from xgblora_engine import protocol as P
    from xgblora_engine.progress import ConsoleReporter
    from xgblora_engine.worker import WorkerClient

    client, code = WorkerClient(), 0
    client.start()
    client.send(command)
    try:
        with ConsoleReporter() as reporter:
            for event in _until_idle(client, command):
                reporter(event)
                if isinstance(event, P.Error):
                    code = code or EXIT_CODES.get(event.kind, 1)
                elif isinstance(event, P.WorkerExited):
                    code = code or 1
    finally:
        client.close()
    return code


def _until_idle(client, command):
    """Events of one command; Ctrl-C asks the worker to stop cleanly (twice: stop now)."""
    from xgblora_engine import protocol as P

    interrupted = False
    events = client.events()
    while True:
        try:
            event = next(events)
        except StopIteration:
            return
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            print("stopping after the current step (Ctrl-C again to abort)", file=sys.stderr)
            client.send(P.Stop())
            continue
        yield event
        # the worker goes idle once, when the one command it was sent is done
        if (isinstance(event, P.StateChanged) and event.state == "idle") or isinstance(event, P.WorkerExited):
            return


def cmd_export(args: argparse.Namespace) -> int:
    from xgblora_engine.export import export_run

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    results = export_run(args.run_dir, args.out, args.format, dtype=args.dtype, quant=args.quant,
                         verify=not args.no_verify, peft_rank=args.peft_rank, log=log, ollama_name=args.ollama_name,
                         push_to=args.push, public=args.public)
    for r in results:
        print(f"{r.format}: {'OK' if r.ok else 'FAILED'} {r.path}\n  {r.message}")
        if r.command:
            print(f"  use it with:\n    {r.command}")
    return 0 if all(r.ok for r in results) else 1


def cmd_chat(args: argparse.Namespace) -> int:
    from xgblora_engine.export.chat import Sampling, chat_session

    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    sampling.validate()
    chat_session(args.model, args.prompt, args.compare, sampling, args.system)
    return 0



def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from xgblora_engine.rundir import runs_root
    from xgblora_engine.runs import COLUMNS, cells, differing_settings, find_run, list_runs

    root = Path(args.root).expanduser() if args.root else runs_root()
    runs = [find_run(r, root) for r in args.runs] if args.runs else list_runs(root)
    differ = differing_settings(runs) if len(args.runs) > 1 else []
    if args.json:
        print(json.dumps({"runs": [_run_record(r) for r in runs],
                          "settings_that_differ": {key: values for key, values in differ}}, indent=1))
        return 0
    if not runs:
        print(f"no runs in {root}: `xgblora train` makes one there", file=sys.stderr)
        return 0
    print(_table(COLUMNS, [cells(r) for r in runs]))
    if differ:
        print("\nsettings that differ:")
        print(_table(["setting", *(r.name for r in runs)], [[key, *map(str, values)] for key, values in differ]))
    elif len(args.runs) > 1:
        print("\nthe runs have the same settings")
    return 0


def _run_record(run) -> dict:
    return {"name": run.name, "path": str(run.path), "status": run.status, "model": run.model, "data": run.data,
            "step": run.step, "total_steps": run.total_steps, "final_loss": run.final_loss,
            "final_eval_loss": run.final_eval_loss, "sample_token_f1": run.sample_f1,
            "train_seconds": run.train_seconds, "peak_bytes": run.peak_bytes, "settings": run.settings}


def _table(header, rows) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *rows])


COMMANDS = {"train": cmd_train, "resume": cmd_resume, "estimate": cmd_estimate, "export": cmd_export,
            "runs": cmd_runs}
COMMANDS["chat"] = cmd_chat


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # re-used to launch data-parallel ranks
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
