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

Every stage writes its output atomically and is skipped when its output exists, so rerunning
the same command after a kill resumes at the interrupted stage; training itself resumes from
its last saved state (``save_steps``). The same code runs on CPU, one GPU, or under
``accelerate launch`` (generation and the reference pass are sharded across processes in
whole batches; training is DDP/FSDP/DeepSpeed through accelerate).

The parts, beside this file: setup.py (accelerator, tokenizer, examples, model, Run),
stages.py (generate, masks, reference, evaluate: cached in the stage folder), optimize.py
(train_stage), objective.py (each method's loss; methods.py: what each method does),
batching.py, generation.py, checkpoints.py (training state, saved models), layout.py (the
file names of a run folder), records.py (iteration records and the table).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from drift import assets
from drift.trainer import io, preemption, rundir, runlock
from drift.trainer.batching import self_play_items
from drift.trainer.checkpoints import clear_train_state, prune_models
from drift.trainer.config import DriftConfig
from drift.trainer.layout import RunLayout
from drift.trainer.methods import method as method_traits
from drift.trainer.optimize import stage_steps, train_stage
from drift.trainer.records import Records, format_table, record_iteration
from drift.trainer.setup import encode, load_rows, make_accelerator, open_run, prepare_model, truncation_report
from drift.trainer.stages import stage_eval, stage_generate, stage_masks, stage_reference


@dataclass
class Stage:
    """One planned stage of the run: ``iter_<index>/``; ``kind`` 'sft' or 'self_play'."""

    index: int
    kind: str
    epochs: int
    data_from: int  # the iteration whose generations/reference a self-play stage trains on


def plan(config: DriftConfig) -> List[Stage]:
    """The stages of a run, in order (iteration 0 = SFT warm start when configured)."""
    stages = []
    if config.sft_warmup_epochs:
        stages.append(Stage(0, "sft", config.sft_warmup_epochs, 0))
    kind = "self_play" if method_traits(config.method).self_play else "sft"
    for k in range(1, config.iterations + 1):
        stages.append(Stage(k, kind, config.num_train_epochs, k))
    for e in range(config.extra_epochs_on_fixed_data):
        stages.append(Stage(2 + e, "self_play", 1, 1))
    return stages


@runlock.releasing  # the run folder's lock is given back when train returns or raises
@preemption.handled  # SIGTERM/SIGUSR1: save the training state at the step's end, raise Preempted
def train(config: Optional[DriftConfig] = None, *, model: Any = None, tokenizer: Any = None, train_dataset: Any = None,
          eval_dataset: Any = None) -> List[Dict[str, Any]]:
    """Run (or resume) a DRIFT run; returns the per-iteration records (``.output_dir``: the run folder).

    ``config`` (default ``DriftConfig()``) says everything; in-memory objects replace what it
    names, as with TRL's trainers: ``model`` (a ``PreTrainedModel``; its weights start the run),
    ``tokenizer`` (default: loaded from the model's ``name_or_path``), ``train_dataset`` and
    ``eval_dataset`` (a ``datasets.Dataset``, a list of dicts or a dict of columns, with prompt /
    response columns or ``messages``; without ``eval_dataset`` the held-out split is cut from
    ``train_dataset``).
    """
    from accelerate.utils import set_seed

    # settings, data and the run folder: every check before anything is written or loaded
    config = _in_memory_config((config or DriftConfig()).validate(), model, train_dataset, eval_dataset)
    _warn_low_precision_weights(config)
    stats: Dict[str, int] = {}
    train_rows, eval_rows, instruction = load_rows(config, train_dataset, eval_dataset, stats)
    fp = rundir.fingerprint(config, train_rows, eval_rows)
    notes: List[str] = []
    config = rundir.resolve_output_dir(config, fp, notes=notes)
    acc = make_accelerator(config)
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps * acc.num_processes
    if len(train_rows) < per_step:
        raise ValueError(f"num_train_examples: {len(train_rows)} pairs is less than one optimizer step ({per_step} = "
                         "per_device_train_batch_size x gradient_accumulation_steps x processes)")
    set_seed(config.seed)
    layout = RunLayout(config.output_dir)
    rundir.check_resume(layout.root, config, fp)

    # the run: tokenizer, encoded examples, the policy (loaded when first needed), the metrics log
    with acc.main_process_first():
        model_path = config.model_name_or_path or str(assets.smollm2_model_dir())
    run = open_run(config, model_path, acc, tokenizer, io.MetricsLog(layout.metrics, acc.is_main_process))
    train_set = [encode(run.tokenizer, r, config, instruction) for r in train_rows]
    eval_set = [encode(run.tokenizer, r, config, instruction) for r in eval_rows]
    if acc.is_main_process:  # one writer per run folder (runlock.py): a second one fails here, naming this pid
        runlock.acquire(layout.root)
    _check_run_dir(layout.root, config, acc, fp)  # the inputs are valid: the folder is this run's from here on
    report = truncation_report(train_set, eval_set, stats, config, per_step)
    if acc.is_main_process:
        for line in notes + [f"output_dir {layout.root}"] + [f"warning: {w}" for w in report["warnings"]]:
            print(f"drift train: {line}", file=sys.stderr)
    if model is not None and not any(layout.files(s.index).trained() for s in plan(config)):
        run.policy.model = prepare_model(model, config, acc.device)
    if config.report_to:
        acc.init_trackers("drift", config={k: str(v) for k, v in config.to_dict().items()})
    if not run.log.has(lambda r: r.get("kind") == "data"):
        run.emit(report["record"])

    if config.eval_base and config.eval_metric != "none":
        ev = stage_eval(run, layout.base, eval_set)
        record_iteration(run, -1, layout.base.name, ev, {}, 0)

    step_offset = 0
    for stage in plan(config):
        d, files = _open_stage(run, layout, stage.index), layout.files(stage.index)
        extra: Dict[str, Any] = {"kind_of_stage": stage.kind, "epochs": stage.epochs}
        items: List[Any] = train_set
        trained = files.trained()
        if stage.kind == "self_play":  # y' from the model so far, LCS masks, reference log-probs
            src = layout.stage(stage.data_from)  # != d only for extra epochs on fixed data
            gens = stage_generate(run, src, train_set, seed=config.seed + stage.data_from)
            masks = stage_masks(run, src, train_set, gens["ids"])
            if not trained:
                ref = stage_reference(run, src, self_play_items(train_set, gens, masks, None, config.method))
                items = self_play_items(train_set, gens, masks, ref, config.method)
            extra.update(gamma=masks["gamma"], lcs_mask_s=masks["seconds"], generation_s=gens["seconds"],
                         reference_s=io.torch_load(layout.reference(stage.data_from))["seconds"],
                         generated_tokens=sum(len(g) for g in gens["ids"]) / len(gens["ids"]))
        if not trained:
            run.policy.set(files.model, train_stage(run, stage, d, items, step_offset, eval_set))
        else:
            run.policy.set(files.model, None)
            if acc.is_main_process:  # a kill between saving the model and dropping the training state
                clear_train_state(d)
        extra["train_s"] = io.read_json(files.trained_info)["seconds"]
        step_offset += stage_steps(run, stage, len(train_set))
        ev = stage_eval(run, d, eval_set)
        record_iteration(run, stage.index, files.name, ev, extra, step_offset)
        if config.save_total_limit and acc.is_main_process:
            prune_models(layout.root, [s.index for s in plan(config) if s.index <= stage.index], config.save_total_limit)
        acc.wait_for_everyone()

    records = Records(r for r in run.log.records() if r.get("kind") == "iteration") if acc.is_main_process else Records()
    records.output_dir = layout.root
    if acc.is_main_process:
        print(format_table(records))
    if config.report_to:
        acc.end_training()
    return records


def _open_stage(run, layout: RunLayout, index: int) -> Path:
    """The stage's folder, created, without the temporaries of a killed run; every process waits for it."""
    d = layout.stage(index)
    if run.accelerator.is_main_process:
        d.mkdir(parents=True, exist_ok=True)
        io.remove_stale_temporaries(d)  # leftovers of a killed run
    run.accelerator.wait_for_everyone()
    return d


def _check_run_dir(out: Path, config: DriftConfig, acc, fp: Dict[str, Any]) -> None:
    """Refuse to resume a run directory written with other settings or data; then record this run's."""
    rundir.check_resume(out, config, fp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        rundir.record(out, config, fp)
        io.remove_stale_temporaries(out)
    acc.wait_for_everyone()


def _warn_low_precision_weights(config: DriftConfig) -> None:
    if config.dtype != "float32":
        print(f"drift train: warning: dtype {config.dtype} trains the {config.dtype} weights themselves (no float32 "
              "master copy), so updates below their rounding step are lost; for mixed precision keep dtype float32 "
              "and set bf16: true (or fp16: true)", file=sys.stderr)


def _in_memory_config(config: DriftConfig, model: Any, train_dataset: Any, eval_dataset: Any) -> DriftConfig:
    """What config.json records for in-memory objects: their names, so reruns compare like with like."""
    import dataclasses

    changes: Dict[str, Any] = {}
    if train_dataset is not None:
        changes.update(data="in_memory", eval_data=None if eval_dataset is None else "in_memory_eval")
    if model is not None:
        name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
        changes["model_name_or_path"] = str(name) if name else "in_memory_model"
    return dataclasses.replace(config, **changes) if changes else config

