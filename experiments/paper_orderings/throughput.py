"""One DRIFT iteration of the study's model at a scale, timed per stage, beside TRL's DPOTrainer on the same pairs.

    python experiments/paper_orderings/throughput.py measure --scale gpu [--model DIR] [--output throughput.json]
    python experiments/paper_orderings/throughput.py render --input throughput.json [--doc docs/GPU.md] [--check]

``measure`` runs ``drift train`` for one DRIFT iteration of the ``xsum`` ``drift`` config at ``--scale``
(run_all's overrides; no SFT warm start, no base evaluation: the iteration starts from the model itself) and
reads the stage timings the trainer logs (metrics.jsonl: generation, reference pass, LCS masks, training,
held-out evaluation and its diagnostics); token counts come from the stage's files (the opponent responses,
the encoded pairs, the held-out predictions). Then, unless ``--no-trl`` or TRL is missing (the record says
why), TRL's ``DPOTrainer`` trains one epoch on the same pairs (prompt, the reference summary as chosen,
drift's opponent response as rejected) with the same batch size, learning rate, beta, precision and
lengths; its wall time is set beside drift's reference pass + training (TRL computes the reference
log-probs inside its steps). ``render`` writes the table between the ``study-throughput`` markers of
``--doc`` (``--check``: only verify it is current).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_all  # noqa: E402

sys.path.insert(0, str(HERE.parents[1] / "scripts"))
import gpu_check  # noqa: E402  (its replace_block writes the table into the doc)

BEGIN, END = "<!-- study-throughput:begin -->", "<!-- study-throughput:end -->"
DEFAULT_DOC = HERE.parents[1] / "docs" / "GPU.md"
STAGES = (("generation", "generation_s", "generated_tokens"), ("reference pass", "reference_s", "pair_tokens"),
          ("LCS masks", "lcs_mask_s", None), ("training (1 epoch)", "train_s", "pair_tokens"),
          ("held-out evaluation (generation + ROUGE)", "eval_s", "eval_tokens"),
          ("held-out diagnostics", "diag_s", None))


def iteration_options(scale: str, model: Optional[str], out_dir: Path) -> List[str]:
    """``drift train`` options: the xsum drift arm at ``scale``, one iteration straight from the model."""
    opts = run_all.overrides(scale, "xsum", "drift", 42, out_dir, model)
    opts[opts.index("--iterations") + 1] = "1"
    return opts + ["--sft_warmup_epochs", "0", "--eval_base", "false"]


class Iteration(NamedTuple):
    """What iteration 1 of a run trained and evaluated, as the trainer built it."""

    tokenizer: Any
    pairs: List[Any]  # the encoded training examples (drift.trainer.examples.Example)
    generations: List[List[int]]  # the opponent response y' per pair (token ids)
    predictions: List[str]  # the held-out greedy predictions of the trained model


def load_iteration(run_dir: Path) -> Iteration:
    """Iteration 1 of the run in ``run_dir``: its config's tokenizer and encoded pairs, and the stage's files."""
    from drift.trainer import DriftConfig
    from drift.trainer.examples import encode, load_rows, load_tokenizer
    from drift.trainer.inference import run_settings
    from drift.trainer.layout import RunLayout
    from drift.trainer.results import Evaluation, Generations

    cfg = DriftConfig.from_dict(run_settings(run_dir))
    tok = load_tokenizer(str(cfg.model_name_or_path or _default_model()))
    rows, _, instruction = load_rows(cfg, None, None, {})
    files = RunLayout(run_dir).files(1)
    return Iteration(tok, [encode(tok, r, cfg, instruction) for r in rows], Generations.load(files.generations).ids,
                     Evaluation.load(files.eval_json).predictions)


def _token_counts(it: Iteration) -> Dict[str, int]:
    """Generated, pair (prompt + chosen and prompt + rejected) and held-out prediction tokens of the iteration."""
    tok, pairs, gens, preds = it
    return {"pairs": len(pairs), "generated_tokens": sum(len(g) for g in gens),
            "pair_tokens": sum(2 * len(p.prompt_ids) + len(p.response_ids) + len(g) for p, g in zip(pairs, gens)),
            "eval_tokens": sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in preds),
            "eval_examples": len(preds)}


def _pairs_text(it: Iteration) -> List[Dict[str, str]]:
    """The iteration's pairs as text for TRL: prompt (chat-formatted as drift encodes it), chosen, rejected."""
    tok = it.tokenizer
    return [{"prompt": tok.decode(p.prompt_ids), "chosen": tok.decode(p.response_ids, skip_special_tokens=True),
             "rejected": tok.decode(g, skip_special_tokens=True)} for p, g in zip(it.pairs, it.generations)]


def trl_dpo(it: Iteration, model_dir: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One epoch of TRL's DPOTrainer on the pairs of iteration ``it``; ``{"skipped": why}`` when TRL is unavailable."""
    try:
        import trl
        from trl import DPOConfig, DPOTrainer
    except Exception as e:  # not installed here, or broken against this transformers
        return {"skipped": f"TRL is not importable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"}
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import datasets
    except ImportError as e:
        return {"skipped": f"datasets is not importable ({e})"}
    rows = _pairs_text(it)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    bf16 = bool(cfg.get("bf16")) and torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="trl-dpo-") as tmp:
        kwargs = dict(output_dir=tmp, per_device_train_batch_size=int(cfg["per_device_train_batch_size"]),
                      learning_rate=float(cfg["learning_rate"]), beta=float(cfg["beta"]), num_train_epochs=1,
                      bf16=bf16, logging_steps=10_000, save_strategy="no", report_to=[],
                      max_length=int(cfg["max_prompt_length"]) + 2 * int(cfg["max_response_length"]),
                      gradient_accumulation_steps=int(cfg.get("gradient_accumulation_steps", 1)),
                      lr_scheduler_type=str(cfg.get("lr_scheduler_type", "linear")), seed=42)
        args = None
        for drop in ((), ("max_length",)):  # keyword names differ between TRL versions
            try:
                args = DPOConfig(**{k: v for k, v in kwargs.items() if k not in drop})
                break
            except TypeError:
                continue
        if args is None:
            return {"skipped": f"DPOConfig of TRL {trl.__version__} rejects the settings"}
        ds = datasets.Dataset.from_list(rows)
        try:
            trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        except TypeError:
            trainer = DPOTrainer(model=model, args=args, train_dataset=ds, tokenizer=tok)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = trainer.train()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return {"trl": trl.__version__, "seconds": round(seconds, 2), "steps": int(out.global_step), "pairs": len(rows)}


def measure(scale: str, model: Optional[str], work: Path, trl: bool = True) -> Dict[str, Any]:
    """The stage timings and token counts of one DRIFT iteration at ``scale``, and TRL's DPO epoch beside it."""
    run_dir = work / "drift_iteration"
    cmd = run_all.train_cmd(HERE / "configs" / "xsum_drift.yaml", iteration_options(scale, model, run_dir))
    t0 = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t0
    from drift.trainer.inference import run_settings
    from drift.trainer.layout import RunLayout
    from drift.trainer.metrics_log import read_metrics

    it = [r for r in read_metrics(RunLayout(run_dir).metrics, "iteration") if r.get("stage") == "iter_1"][-1]
    cfg = run_settings(run_dir)
    iteration = load_iteration(run_dir)
    counts = _token_counts(iteration)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    result: Dict[str, Any] = {
        "schema": 1, "scale": scale, "device": device, "torch": torch.__version__, "python": platform.python_version(),
        "model": Path(model).name if model else "SmolLM2-135M-Instruct", "wall_s": round(wall, 1),
        "settings": {k: cfg.get(k) for k in ("num_train_examples", "num_eval_examples", "max_prompt_length",
                                             "max_response_length", "max_new_tokens", "per_device_train_batch_size",
                                             "generation_batch_size", "per_device_eval_batch_size", "bf16", "beta",
                                             "learning_rate", "oal_weight")},
        "stages": {key: it.get(key) for _, key, _ in STAGES}, "tokens": counts,
    }
    try:
        from drift._provenance import git_commit

        result["git_commit"] = git_commit(HERE, paths=[HERE.parents[1] / "python", HERE]) or "unknown"
    except Exception:
        result["git_commit"] = "unknown"
    result["trl_dpo"] = trl_dpo(iteration, model or str(_default_model()), cfg) if trl else {"skipped": "--no-trl"}
    return result


def _default_model() -> Path:
    from drift import assets

    return assets.smollm2_model_dir()


def table(result: Dict[str, Any]) -> List[str]:
    """The markdown table of a ``measure`` result (and the TRL comparison line)."""
    s, t = result["stages"], result["tokens"]
    st = result["settings"]
    lines = [f"Measured: {result['device']}, torch {result['torch']}, commit {str(result.get('git_commit', '?'))[:12]}; "
             f"{result['model']}, one DRIFT iteration on {t['pairs']} XSum pairs ({st['max_prompt_length']}-token prompts, "
             f"{st['max_new_tokens']} new tokens, batch {st['per_device_train_batch_size']}, generation batch "
             f"{st['generation_batch_size']}, bf16 {st['bf16']}), {t['eval_examples']} held-out examples; "
             f"{result['wall_s']:.0f} s for the whole `drift train` process (model load included).", "",
             "| stage | seconds | tokens | tokens/s |", "| --- | ---: | ---: | ---: |"]
    for label, key, tok_key in STAGES:
        sec = s.get(key)
        if sec is None:
            continue
        n = t.get(tok_key) if tok_key else None
        rate = f"{n / sec:,.0f}" if n and sec else "-"
        lines.append(f"| {label} | {sec:.2f} | {f'{n:,}' if n else '-'} | {rate} |")
    d = result.get("trl_dpo", {})
    ours = (s.get("reference_s") or 0.0) + (s.get("train_s") or 0.0)
    lines.append("")
    if "skipped" in d:
        lines.append(f"TRL's DPOTrainer: skipped ({d['skipped']}).")
    else:
        lines += ["| trainer, one epoch on the same pairs and batch | seconds | pair tokens/s | ratio to drift |",
                  "| --- | ---: | ---: | ---: |",
                  f"| drift (reference pass + training) | {ours:.2f} | {t['pair_tokens'] / ours:,.0f} | 1.00 |",
                  f"| TRL {d['trl']} DPOTrainer ({d['steps']} steps, reference inside the steps) | {d['seconds']:.2f} | "
                  f"{t['pair_tokens'] / d['seconds']:,.0f} | {d['seconds'] / ours:.2f} |"]
    return lines


def render_doc(doc: Path, result: Dict[str, Any], check: bool = False) -> bool:
    """Put :func:`table` between the markers of ``doc``; with ``check``, only compare. Returns whether it was current."""
    text = Path(doc).read_text()
    new = gpu_check.replace_block(text, BEGIN, END, "\n".join(table(result)), where=f"doc: {doc}")
    if check:
        return new == text
    Path(doc).write_text(new)
    return True


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="time one DRIFT iteration (and TRL's DPO epoch) and write the JSON")
    m.add_argument("--scale", choices=tuple(run_all.SCALES), default="gpu")
    m.add_argument("--model", default=None, help="model folder instead of SmolLM2 (a stand-in for rehearsals)")
    m.add_argument("--output", default="throughput.json")
    m.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    m.add_argument("--no-trl", action="store_true", help="leave TRL's DPOTrainer out")
    r = sub.add_parser("render", help="write the table of a measure JSON into the doc")
    r.add_argument("--input", required=True)
    r.add_argument("--doc", default=str(DEFAULT_DOC))
    r.add_argument("--check", action="store_true", help="only verify that the doc's table is current")
    args = p.parse_args(argv)
    if args.cmd == "render":
        ok = render_doc(Path(args.doc), json.loads(Path(args.input).read_text()), args.check)
        print(("current: " if ok else "stale: ") + args.doc if args.check else f"wrote the table into {args.doc}")
        return 0 if ok else 1
    with tempfile.TemporaryDirectory(prefix="drift-throughput-") as tmp:
        res = measure(args.scale, args.model, Path(args.work) if args.work else Path(tmp), trl=not args.no_trl)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(res, indent=1) + "\n")
    print("\n".join(table(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
