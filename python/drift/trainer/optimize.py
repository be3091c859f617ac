"""Optimisation: one training stage, ``stage.epochs`` epochs (or ``max_steps``) of AdamW on the method's loss.

Data order: epoch ``e`` uses a permutation seeded by (seed, stage, e); optimizer step ``s``
takes the next ``per_device_train_batch_size * gradient_accumulation_steps * processes`` items,
micro-batch ``a`` of process ``p`` being chunk ``a * processes + p`` - so one process with doubled
accumulation sees exactly what two processes see. A trailing remainder smaller than one optimizer
step is left out of that epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from drift import atomic
from drift.trainer import checkpoints, preemption
from drift.trainer.config import DriftConfig
from drift.trainer.methods import method as method_traits
from drift.trainer.objective import compute_loss
from drift.trainer.batching import SelfPlayExample
from drift.trainer.examples import Example
from drift.trainer.results import TrainInfo
from drift.trainer.run import Run
from drift.trainer.stage_plan import Stage
from drift.trainer.stages import evaluate_examples


def steps_per_epoch(run: Run, n_items: int) -> int:
    cfg = run.config
    return n_items // (cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * run.accelerator.num_processes)


def stage_steps(run: Run, stage: Stage, n_items: int) -> int:
    """Optimizer steps of one training stage: ``max_steps`` when set, else its epochs over the pairs."""
    if run.config.max_steps > 0:
        return run.config.max_steps
    return steps_per_epoch(run, n_items) * stage.epochs


def lr_at(config: DriftConfig, step: int, total: int, peak: float) -> float:
    """Learning rate before optimizer step ``step`` (0-based) of ``total``: warm-up, then the schedule."""
    warmup = math.ceil(config.warmup_ratio * total)
    if step < warmup:
        return peak * step / warmup
    if config.lr_scheduler_type == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    if config.lr_scheduler_type == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * max(0.0, 1.0 - progress)


def step_chunk(run: Run, stage: Stage, n_items: int, step: int, per_epoch: int) -> List[int]:
    """The item indices optimizer step ``step`` trains on, all processes and micro-batches together."""
    cfg = run.config
    epoch, s = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + stage.index * 1009 + epoch)
    order = torch.randperm(n_items, generator=gen).tolist()
    size = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * run.accelerator.num_processes
    return order[s * size: (s + 1) * size]


def _model_and_optimizer(run: Run, stage: Stage):
    """The policy (with a fresh LoRA adapter under use_peft) and AdamW, prepared by accelerate."""
    cfg, acc = run.config, run.accelerator
    model = run.policy.get()
    model.train()
    if cfg.use_peft:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(cfg.seed + stage.index)
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    adam = dict(lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
                weight_decay=cfg.weight_decay)
    try:  # the fused kernel is ~2x faster on CPU too (memory-bound update)
        optimizer = torch.optim.AdamW(params, fused=acc.device.type in ("cpu", "cuda"), **adam)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(params, **adam)
    return acc.prepare(model, optimizer)


def optimizer_step(run: Run, wrapped, optimizer, scaler, batches: List[List[Any]], objective: str, lr: float):
    """One optimizer step over the micro-``batches`` of this process: ``(summed loss parts, grad norm)``."""
    acc, cfg, accum = run.accelerator, run.config, len(batches)
    for group in optimizer.param_groups:
        group["lr"] = lr
    sums: Dict[str, torch.Tensor] = {}
    for a, mine in enumerate(batches):
        with contextlib.nullcontext() if a == accum - 1 else acc.no_sync(wrapped):
            with run.precision.autocast():
                parts = compute_loss(wrapped, mine, objective, run)
            loss = parts["loss"] / accum
            acc.backward(scaler.scale(loss) if scaler is not None else loss)
        for k, v in parts.items():
            v = v.detach().float()
            sums[k] = sums.get(k, 0.0) + (v if k == "tokens" else v / accum)
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for p in wrapped.parameters() if p.requires_grad]  # FSDP swaps in sharded parameters
    grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
    if scaler is not None:
        scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return sums, grad_norm


def step_record(run: Run, stage: Stage, sums: Dict[str, torch.Tensor], grad_norm, step: int, per_epoch: int,
                step_offset: int, lr: float, t0: float) -> Dict[str, Any]:
    """The ``kind: step`` record: the loss parts averaged over processes, throughput (since ``t0``) and position."""
    acc, cfg = run.accelerator, run.config
    keys = sorted(sums)
    vec = acc.reduce(torch.stack([sums[k] for k in keys]).to(acc.device), reduction="mean")
    record = {k: float(v) for k, v in zip(keys, vec)}
    seconds = time.perf_counter() - t0
    record["tokens_per_s"] = record.pop("tokens") * acc.num_processes / seconds
    epoch, s = divmod(step, per_epoch)
    record.update(kind="step", iteration=stage.index, step=step + 1, epoch=epoch + (s + 1) / per_epoch,
                  global_step=step_offset + step + 1, lr=lr, step_s=seconds,
                  method=cfg.method if stage.self_play else "sft",
                  grad_norm=None if grad_norm is None else float(getattr(grad_norm, "full_tensor", lambda: grad_norm)()))
    if not method_traits(cfg.method).oal:
        record.pop("oal_loss", None)  # not computed by this method: absent, not 0
    return record


def _save_model(run: Run, d: Path, wrapped, info: TrainInfo):
    """Save ``d/model`` (LoRA: the adapter alone with its lineage, and/or merged); the model the next stage starts from."""
    acc, cfg = run.accelerator, run.config
    model = acc.unwrap_model(wrapped, keep_fp32_wrapper=False)  # drop a launcher's autocast wrapper
    state_dict = acc.get_state_dict(wrapped)
    if cfg.use_peft and not cfg.lora_save_merged:  # the LoRA adapter alone, replayed onto its base by load_model
        checkpoints.save_stage_model(run, d, model, state_dict, info, run.policy.path)
    if cfg.use_peft:
        model = model.merge_and_unload()  # the next stage starts from the merged weights
        state_dict = model.state_dict() if acc.is_main_process else None
    if not cfg.use_peft or cfg.lora_save_merged:
        checkpoints.save_stage_model(run, d, model, state_dict, info, None)
    return model


def train_stage(run: Run, stage: Stage, d: Path, items: Sequence[Example | SelfPlayExample], step_offset: int,
                eval_set: Optional[List[Example]] = None):
    """Train the policy for ``stage.epochs`` epochs on ``items``; save ``d/model``; return the model.

    Resumes from the stage's last saved training state (saved every ``save_steps``); step and
    eval records after it are dropped and written again. With ``eval_steps``, every ``eval_steps``
    optimizer steps (but the stage's last, which the iteration record scores) the model in
    training is evaluated on ``eval_set`` and a ``kind: eval`` record logged at the global step.
    """
    acc, cfg = run.accelerator, run.config
    wrapped, optimizer = _model_and_optimizer(run, stage)
    per_epoch, total = steps_per_epoch(run, len(items)), stage_steps(run, stage, len(items))
    bs, accum, world, rank = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, acc.num_processes, acc.process_index
    peak = cfg.sft_learning_rate if stage.warm_start and cfg.sft_learning_rate is not None else cfg.learning_rate
    scaler = run.precision.grad_scaler() if getattr(acc, "scaler", None) is None else None  # fp16 loss scaling
    start = checkpoints.load_train_state(run, d, scaler)
    run.log.drop(lambda r: r.get("kind") in ("step", "eval") and r.get("iteration") == stage.index
                 and r["step"] > start)
    eval_every = cfg.eval_steps if cfg.eval_steps and cfg.eval_metric != "none" and eval_set else 0
    if eval_every and acc.distributed_type == "FSDP":
        raise ValueError("eval_steps: evaluating during training is not supported under FSDP (the sharded model "
                         "cannot generate batch by batch on each process); drop eval_steps")

    t_train = time.perf_counter()
    bar = _progress(acc, d.name, start, total)
    preemption.defer(True)  # SIGTERM/SIGUSR1 from here: finish the optimizer step, save, stop (below)
    for step in range(start, total):
        t0 = time.perf_counter()
        chunk = step_chunk(run, stage, len(items), step, per_epoch)
        batches = [[items[i] for i in chunk[(a * world + rank) * bs: (a * world + rank + 1) * bs]] for a in range(accum)]
        lr = lr_at(cfg, step, total, peak)
        sums, grad_norm = optimizer_step(run, wrapped, optimizer, scaler, batches, stage.objective, lr)
        record = step_record(run, stage, sums, grad_norm, step, per_epoch, step_offset, lr, t0)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{lr:.3g}", refresh=False)
        if (step + 1) % cfg.logging_steps == 0 or step + 1 == total:
            run.emit(record)
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < total:
            ev = evaluate_examples(run, acc.unwrap_model(wrapped), eval_set, f"{d.name}: eval@{step + 1}")
            run.emit({"kind": "eval", "iteration": stage.index, "step": step + 1,
                      "global_step": step_offset + step + 1, "method": record["method"], "run": cfg.label,
                      "rouge1": ev.rouge1, "rouge2": ev.rouge2, "rougeL": ev.rougeL, "eval_s": ev.seconds})
        if (step + 1) % cfg.save_steps == 0 and step + 1 < total:
            checkpoints.save_train_state(run, d, step + 1, scaler)
        atomic.fault_point(f"{d.name}: train:step{step + 1}")
        signum = preemption.requested(acc)
        if signum:  # preempted: this step's training state, then Preempted (the rerun resumes from it)
            checkpoints.save_train_state(run, d, step + 1, scaler)
            preemption.stop(signum, f"{d.name} step {step + 1} of {total}")
    preemption.defer(False)
    bar.close()

    info = TrainInfo(total, start, time.perf_counter() - t_train)
    model = _save_model(run, d, wrapped, info)
    if acc.is_main_process:
        atomic.remove_stale_temporaries(d)
        checkpoints.clear_train_state(d)
    acc.wait_for_everyone()
    acc.free_memory()
    # FSDP sharded the model in place: the next stage reloads the saved full weights.
    return None if acc.distributed_type == "FSDP" else model


def _progress(acc, name: str, start: int, total: int):
    """The training progress bar (optimizer steps, with loss, lr and step/s), on the local main process."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"{name}: train", unit="step", dynamic_ncols=True,
                disable=not acc.is_local_main_process)
