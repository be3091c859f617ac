"""The DRIFT iteration loop, top to bottom (docs/METHOD.md section 3).

    train(config)
      load + split data, check columns          (before any model loads)
      [base]   evaluate the starting model
      [iter_0] optional SFT warm start
      for k in 1..iterations:                    (iter_<k>/ in output_dir)
        generate   y' ~ pi_{k-1}(.|x)            -> generations.pt
        masks      drift.lcs_mask(y, y')         -> masks.pt      (gamma = mean |LCS|/|y|)
        reference  opponent's masked log-probs   -> reference.pt  (computed once, same model)
        train      pi_theta <- pi_{k-1} on the method's loss -> model/ (train_state-<step>/ meanwhile)
        evaluate   ROUGE-1/2/L on held-out data  -> eval.json     (eval_metric; eval_steps also inside train)
        log        the iteration record          -> metrics.jsonl

Every stage output is written atomically with its size and SHA-256 in the stage's manifest.json,
and reused when stored and sound (a damaged one is computed again after a warning), so rerunning
the same command after a kill resumes at the interrupted stage; training itself resumes from its
last saved state (``save_steps``), and a stage whose iteration record is logged is not touched.
The same code runs on CPU, one GPU, or under ``accelerate launch`` (generation and the reference
pass are sharded across processes in whole batches; training is DDP/FSDP/DeepSpeed through
accelerate).

The parts, beside this file:
  stage_plan.py   the planned stages (Stage, plan)
  examples.py     data rows -> tokenizer -> encoded Example; the truncation report
  accelerator.py  the Accelerator (CPU, GPU, accelerate launch)
  policy.py       the model: load_model (checkpoint or LoRA lineage, checked), Policy
  run.py          Run: config, accelerator, tokenizer, policy, metrics log; open_run
  stages.py       generate, masks, reference, evaluate (cached in the stage folder)
  results.py      the stage outputs as dataclasses (Generations, Masks, Reference, Evaluation, TrainInfo)
  manifest.py     each stage folder's sizes and SHA-256s (damage found on resume)
  generation.py   batched, sharded generation (and opponent answers from a file)
  batching.py     padded batches; SelfPlayExample (y, y', masks, reference sums)
  optimize.py     train_stage: the optimizer loop of one stage
  objective.py    each method's loss (methods.py: what each method does)
  checkpoints.py  training state, saved stage models, pruning (lora.py: LoRA stages as stacked adapters)
  records.py      iteration records and the printed table (metrics_log.py: metrics.jsonl)
  rundir.py       the run folder: its name, and whether it holds this run (resume) or another
  runlock.py      one writer per run folder (an exclusive lock, released by the OS when the process dies)
  preemption.py   SIGTERM/SIGUSR1: save the training state at the end of the step, then stop
  layout.py       the file names of a run folder
  config.py       DriftConfig; precision.py: dtype, autocast and loss scaling
  inference.py    drift generate / drift eval (one model, no training)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from drift import assets, atomic
from drift.trainer import preemption, rundir, runlock
from drift.trainer.accelerator import make_accelerator
from drift.trainer.batching import SelfPlayExample, self_play_examples
from drift.trainer.checkpoints import clear_train_state, prune_models
from drift.trainer.config import DriftConfig
from drift.trainer.examples import Example, encode, load_rows, truncation_report
from drift.trainer.layout import RunLayout, StageFiles
from drift.trainer.metrics_log import MetricsLog
from drift.trainer.optimize import stage_steps, train_stage
from drift.trainer.policy import prepare_model
from drift.trainer.records import Records, format_table, iteration_logged, record_iteration
from drift.trainer.results import Generations, Masks, Reference, TrainInfo, summary
from drift.trainer.run import Run, open_run
from drift.trainer.stage_plan import Stage, plan
from drift.trainer.stages import stage_eval, stage_generate, stage_masks, stage_reference

__all__ = ["Stage", "plan", "train"]


@runlock.releasing  # the run folder's lock is given back when train returns or raises
@preemption.handled  # SIGTERM/SIGUSR1: save the training state at the step's end, raise Preempted
def train(config: Optional[DriftConfig] = None, *, model: Any = None, tokenizer: Any = None, train_dataset: Any = None,
          eval_dataset: Any = None) -> List[Dict[str, Any]]:
    """Run (or resume) a DRIFT run; returns the per-iteration records (``.output_dir``: the run folder).

    ``config`` (default ``DriftConfig()``) says everything; in-memory objects replace what it
    names, as with TRL's trainers: ``model`` (a ``PreTrainedModel``; its weights start the run),
    ``tokenizer`` (default: loaded from the model's ``name_or_path``; required for a model
    without one), ``train_dataset`` and ``eval_dataset`` (a ``datasets.Dataset``, a list of dicts
    or a dict of columns, with prompt / response columns or ``messages``; without
    ``eval_dataset`` the held-out split is cut from ``train_dataset``). Nothing is fetched from
    the Hub unless the config or the model names a hub model.
    """
    from accelerate.utils import set_seed

    # settings, data and the run folder: every check before anything is written or loaded
    config = _in_memory_config((config or DriftConfig()).validate(), model, tokenizer, train_dataset, eval_dataset)
    _warn_low_precision_weights(config)
    stats: Dict[str, int] = {}
    train_rows, eval_rows, instruction = load_rows(config, train_dataset, eval_dataset, stats)
    fp = rundir.fingerprint(config, train_rows, eval_rows)
    notes: List[str] = []
    config = rundir.resolve_output_dir(config, fp, notes=notes)  # the one resume check: refuses another run's folder
    acc = make_accelerator(config)
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps * acc.num_processes
    if len(train_rows) < per_step:
        raise ValueError(f"num_train_examples: {len(train_rows)} pairs is less than one optimizer step ({per_step} = "
                         "per_device_train_batch_size x gradient_accumulation_steps x processes)")
    set_seed(config.seed)
    layout, stages = RunLayout(config.output_dir), plan(config)

    # the run: tokenizer, encoded examples, the policy (loaded when first needed), the metrics log
    with acc.main_process_first():
        model_path = config.model_name_or_path or str(assets.smollm2_model_dir())
    run = open_run(config, model_path, acc, tokenizer, MetricsLog(layout.metrics, acc.is_main_process))
    train_set = [encode(run.tokenizer, r, config, instruction) for r in train_rows]
    eval_set = [encode(run.tokenizer, r, config, instruction) for r in eval_rows]
    if acc.is_main_process:  # one writer per run folder (runlock.py): a second one fails here, naming this pid
        runlock.acquire(layout.root)
    _record_run_dir(layout.root, config, acc, fp)  # the inputs are valid: the folder is this run's from here on
    report = truncation_report(train_set, eval_set, stats, config, per_step)
    if acc.is_main_process:
        for line in notes + [f"output_dir {layout.root}"] + [f"warning: {w}" for w in report["warnings"]]:
            print(f"drift train: {line}", file=sys.stderr)
    if model is not None and not any(layout.files(s.index).trained() for s in stages):
        run.policy.model = prepare_model(model, config, acc.device)
    if config.report_to:
        acc.init_trackers("drift", config={k: str(v) for k, v in config.to_dict().items()})
    if not run.log.has(lambda r: r.get("kind") == "data"):
        run.emit(report["record"])

    if config.eval_base and config.eval_metric != "none" and not iteration_logged(run, -1):
        record_iteration(run, -1, layout.base.name, stage_eval(run, _open_stage(run, layout.base), eval_set), {}, 0)

    step_offset = 0
    for stage in stages:
        d, files = _open_stage(run, layout.stage(stage.index)), layout.files(stage.index)
        reported = iteration_logged(run, stage.index)
        if not files.trained():  # generate -> mask -> reference -> train
            examples, facts = _training_examples(run, layout, stage, train_set)
            run.policy.set(files.model, train_stage(run, stage, d, examples, step_offset, eval_set))
        else:
            facts = {} if reported else _stage_facts(run, layout, stage, train_set)
            _resume_trained(run, d)
        step_offset += stage_steps(run, stage, len(train_set))
        if not reported:  # -> evaluate -> log
            facts["train_s"] = TrainInfo.of_stage(d).seconds
            record_iteration(run, stage.index, files.name, stage_eval(run, d, eval_set),
                             {"kind_of_stage": stage.objective, "epochs": stage.epochs, **facts}, step_offset)
        if config.save_total_limit and acc.is_main_process:
            prune_models(layout.root, [s.index for s in stages if s.index <= stage.index], config.save_total_limit)
        acc.wait_for_everyone()

    records = Records(r for r in run.log.records() if r.get("kind") == "iteration") if acc.is_main_process else Records()
    records.output_dir = layout.root
    if acc.is_main_process:
        print(format_table(records))
    if config.report_to:
        acc.end_training()
    return records


def _training_examples(run: Run, layout: RunLayout, stage: Stage, train_set: List[Example]):
    """What ``stage`` trains on, and the record fields of its inputs: the examples themselves (SFT), or
    (self-play) their generations y' by the model so far, the LCS masks and the reference log-probs."""
    if not stage.self_play:
        return train_set, {}
    config, src = run.config, layout.stage(stage.data_from)  # != the stage's folder only for extra epochs
    gens = stage_generate(run, src, train_set, seed=config.seed + stage.data_from)
    masks = stage_masks(run, src, train_set, gens.ids)
    ref = stage_reference(run, src, self_play_examples(train_set, gens, masks, None, config.method))
    examples: List[SelfPlayExample] = self_play_examples(train_set, gens, masks, ref, config.method)
    return examples, _facts(gens.summary(), masks.summary(), ref.summary())


def _stage_facts(run: Run, layout: RunLayout, stage: Stage, train_set: List[Example]) -> Dict[str, Any]:
    """The record fields of a trained stage's inputs, from its manifest: the inputs themselves are read (or
    computed again) only for a run folder written before manifests."""
    if not stage.self_play:
        return {}
    src = layout.stage(stage.data_from)

    def gens() -> Generations:
        return stage_generate(run, src, train_set, seed=run.config.seed + stage.data_from)

    def masks() -> Masks:
        return stage_masks(run, src, train_set, gens().ids)

    def ref() -> Reference:
        return stage_reference(run, src, self_play_examples(train_set, gens(), masks(), None, run.config.method))

    return _facts(summary(run, src, Generations, gens), summary(run, src, Masks, masks),
                  summary(run, src, Reference, ref))


def _facts(gens: Dict[str, Any], masks: Dict[str, Any], ref: Dict[str, Any]) -> Dict[str, Any]:
    return {"gamma": masks["gamma"], "lcs_mask_s": masks["lcs_mask_s"], "generation_s": gens["generation_s"],
            "reference_s": ref["reference_s"], "generated_tokens": gens["generated_tokens"]}


def _resume_trained(run: Run, d: Path) -> None:
    """A stage trained already: its model is the policy from here on (loaded only if a later stage needs it);
    a training state left by a kill between saving the model and removing the state is removed."""
    run.policy.set(StageFiles(d).model, None)
    if run.accelerator.is_main_process:
        clear_train_state(d)


def _open_stage(run: Run, d: Path) -> Path:
    """The stage folder ``d``, created, without the temporaries of a killed run; every process waits for it."""
    if run.accelerator.is_main_process:
        d.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale_temporaries(d)  # leftovers of a killed run
    run.accelerator.wait_for_everyone()
    return d


def _record_run_dir(out: Path, config: DriftConfig, acc, fp: Dict[str, Any]) -> None:
    """Record this run's settings and data in ``out`` (after the resume check passed) and clear leftovers."""
    acc.wait_for_everyone()
    if acc.is_main_process:
        rundir.record(out, config, fp)
        atomic.remove_stale_temporaries(out)
    acc.wait_for_everyone()


def _warn_low_precision_weights(config: DriftConfig) -> None:
    if config.dtype != "float32":
        print(f"drift train: warning: dtype {config.dtype} trains the {config.dtype} weights themselves (no float32 "
              "master copy), so updates below their rounding step are lost; for mixed precision keep dtype float32 "
              "and set bf16: true (or fp16: true)", file=sys.stderr)


def _in_memory_config(config: DriftConfig, model: Any, tokenizer: Any, train_dataset: Any,
                      eval_dataset: Any) -> DriftConfig:
    """What config.json records for in-memory objects: their names, so reruns compare like with like.

    A ``model`` without a name (``name_or_path``) needs a ``tokenizer``: there is nothing to load one
    from, and no hub name to try.
    """
    import dataclasses

    changes: Dict[str, Any] = {}
    if train_dataset is not None:
        changes.update(data="in_memory", eval_data=None if eval_dataset is None else "in_memory_eval")
    if model is not None:
        name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
        if not name and tokenizer is None:
            raise ValueError(f"tokenizer: required with model={type(model).__name__} (an in-memory model without "
                             "name_or_path, so there is no folder to load its tokenizer from); pass "
                             "tokenizer=<its tokenizer>")
        changes["model_name_or_path"] = str(name) if name else "in_memory_model"
    return dataclasses.replace(config, **changes) if changes else config
