"""The no-grad stages of an iteration, each stored in its stage folder (results.py) and reused when stored.

    generate   y' ~ pi_{k-1}(.|x)                  -> generations.pt
    masks      drift.lcs_mask(y, y')               -> masks.pt      (gamma = mean |LCS|/|y|)
    reference  the opponent's masked log-prob sums -> reference.pt  (once, with the model before training)
    evaluate   greedy ROUGE-1/2/L on held-out data -> eval.json
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

import drift
from drift import losses
from drift.rouge import rouge
from drift.trainer import batching, generation
from drift.trainer.batching import SelfPlayExample, response_logits
from drift.trainer.examples import Example
from drift.trainer.layout import RunLayout
from drift.trainer.results import Evaluation, Generations, Masks, Reference, cached
from drift.trainer.run import Run


def stage_generate(run: Run, d: Path, examples: List[Example], seed: int) -> Generations:
    """``generations.pt``: y' per training example (cut after EOS), sampled from the current policy."""
    def compute() -> Generations:
        t0 = time.perf_counter()
        given = run.config.opponent_generations
        if given and d.name == RunLayout.stage_name(1):  # bring-your-own opponent answers for the first iteration
            ids = generation.provided_generations(Path(given), examples, run.tokenizer)
        else:
            ids = generation.generate(run, run.policy.get(), [p.prompt_ids for p in examples],
                                      sample=run.config.do_sample, seed=seed, desc=f"{d.name}: generate")
        return Generations(ids, time.perf_counter() - t0)

    return cached(run, d, Generations, compute)


def stage_masks(run: Run, d: Path, examples: List[Example], generated: List[List[int]]) -> Masks:
    """``masks.pt``: the LCS masks of y (``chosen``) and y' (``rejected``), ``lcs_length`` and ``gamma``."""
    def compute() -> Masks:
        t0 = time.perf_counter()
        ys = [torch.tensor(p.response_ids, dtype=torch.long) for p in examples]
        yps = [torch.tensor(g if g else [], dtype=torch.long) for g in generated]
        m = drift.lcs_mask(ys, yps)
        lcs = [int(v) for v in m.lcs_length]
        return Masks(chosen=[list(map(bool, v)) for v in m.y], rejected=[list(map(bool, v)) for v in m.y_prime],
                     lcs_length=lcs, gamma=sum(k / len(p.response_ids) for k, p in zip(lcs, examples)) / len(examples),
                     seconds=time.perf_counter() - t0)

    return cached(run, d, Masks, compute)


def masked_sums(run: Run, model, pairs: List[SelfPlayExample]):
    """``(chosen, rejected)``: (B,) the masked log-prob sums of y and y' of one batch of ``pairs`` under ``model``
    (the method's masks; the caller chooses grad mode and autocast)."""
    b, cm, rm = batching.self_play_batch(pairs, run.tokenizer.pad_token_id, run.accelerator.device)
    logits = response_logits(model, b)
    n = len(pairs)
    return losses.token_logps(logits[:n], b.labels[:n], cm).sum(-1), losses.token_logps(logits[n:], b.labels[n:], rm).sum(-1)


def stage_reference(run: Run, d: Path, pairs: List[SelfPlayExample]) -> Reference:
    """``reference.pt``: the current model's masked log-prob sums of y (``chosen``) and y' (``rejected``)."""
    def compute() -> Reference:
        acc, cfg = run.accelerator, run.config
        model = run.policy.get()
        model.eval()
        t0 = time.perf_counter()
        bs = cfg.precompute_ref_batch_size or cfg.per_device_eval_batch_size
        starts = list(range(0, len(pairs), bs))[acc.process_index:: acc.num_processes]
        results = []
        with torch.no_grad(), run.precision.autocast():
            for s in starts:
                c, r = masked_sums(run, model, pairs[s: s + bs])
                results += [(s + i, (float(c[i]), float(r[i]))) for i in range(len(c))]
        model.train()
        values = generation.gather_ordered(acc, results, len(pairs))
        return Reference([v[0] for v in values], [v[1] for v in values], time.perf_counter() - t0)

    return cached(run, d, Reference, compute)


def evaluate_examples(run: Run, model, examples: List[Example], desc: str, diagnostics: bool = False) -> Evaluation:
    """Greedy generations for the held-out ``examples`` in batches of ``per_device_eval_batch_size``, scored by
    ROUGE-1/2/L: the scores, seconds, predictions, prompts and references; with ``diagnostics``, also the
    mechanism diagnostics against those generations."""
    t0 = time.perf_counter()
    ids = generation.generate(run, model, [p.prompt_ids for p in examples], sample=False, seed=0, desc=desc,
                              batch_size=run.config.per_device_eval_batch_size)
    predictions = [run.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
    scores = rouge(predictions, [p.response_text for p in examples])
    out = Evaluation(scores["rouge1"], scores["rouge2"], scores["rougeL"], time.perf_counter() - t0, predictions,
                     [p.prompt_text for p in examples], [p.response_text for p in examples])
    if diagnostics and examples:
        out.diagnostics = eval_diagnostics(run, model, examples, ids)
    return out


def eval_diagnostics(run: Run, model, examples: List[Example], generated: List[List[int]]) -> Dict[str, Any]:
    """drift.diagnostics.mechanism_diagnostics of the held-out examples against the stage's greedy
    generations (teacher-forced, deterministic; every process computes the same numbers)."""
    from drift.diagnostics import mechanism_diagnostics

    eos = run.tokenizer.eos_token_id
    with torch.no_grad(), run.precision.autocast():
        return mechanism_diagnostics(model, [p.prompt_ids for p in examples], [p.response_ids for p in examples],
                                     [list(g) for g in generated], ignore_ids=[] if eos is None else [eos],
                                     batch_size=run.config.per_device_eval_batch_size)


def stage_eval(run: Run, d: Path, examples: List[Example]) -> Optional[Evaluation]:
    """``eval.json``: the stage model's held-out evaluation (None, and nothing written, with eval_metric none)."""
    if run.config.eval_metric == "none":
        return None
    # the diagnostics only where they are stored and logged: the stage's evaluation, not eval_steps'
    return cached(run, d, Evaluation, lambda: evaluate_examples(
        run, run.policy.get(), examples, f"{d.name}: eval", diagnostics=run.config.eval_diagnostics))
