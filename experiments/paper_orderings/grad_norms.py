"""How large each DRIFT term's gradient is: ||grad L_DAM|| and ||grad (lambda x L_OAL)|| at one model.

    python experiments/paper_orderings/grad_norms.py --run RUN_DIR --model MODEL_DIR --betas 0.1 0.5
        --lambdas 0.01 0.1 0.3 [--stage 1] [--batches 8] [--output grad_norms.json]

``RUN_DIR`` is a self-play run whose stage ``iter_<stage>`` holds the opponent generations, LCS masks and
(optionally) reference sums of that stage (``generations.pt``, ``masks.pt``, ``reference.pt``); ``MODEL_DIR``
the model that stage trains from (``iter_<stage-1>/model``, e.g. the SFT warm start). On the first
``--batches`` micro-batches of the run's training pairs (its ``config.json``: data, split, batch size), the
DAM term's gradient (the run's ``loss_type``, as training computes it) with respect to every weight is taken
per ``beta`` and the OAL term's once (it does not depend on beta; lambda scales it), and their global L2 norms
are summed over the batches' gradient (as an optimizer step on them would see it). The loss values alone
cannot say which term steers the update: the page's loss-term table showed lambda x OAL at 61-71x the DAM
value at the CPU scale's settings; this gives the ratio that matters, ``lambda ||grad L_OAL|| / ||grad
L_DAM||``, and the cosine between the two.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from drift.trainer import DriftConfig
from drift.trainer.batching import response_logits, self_play_batch, self_play_examples
from drift.trainer.examples import encode, load_rows
from drift.trainer.inference import run_settings
from drift.trainer.layout import RunLayout
from drift.trainer.objective import self_play_output
from drift.trainer.results import Generations, Masks, Reference
from drift.trainer.run import open_run
from drift.trainer.stages import masked_sums


def _flat_grad(loss: torch.Tensor, params: List[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).float().reshape(-1) for g, p in zip(grads, params)])


def grad_norms(run_dir: Path, model_dir: Path, betas: Sequence[float], lambdas: Sequence[float], stage: int = 1,
               batches: int = 8) -> Dict[str, object]:
    """Gradient norms of the DAM term (per beta) and of the OAL term (per unit lambda) and their ratios.

    Returns ``{"beta": {b: {"dam_grad_norm", "oal_grad_norm", "cosine", "dam_loss", "oal_loss",
    "ratio": {lambda: lambda*||g_OAL||/||g_DAM||}, "value_ratio": {lambda: lambda*L_OAL/L_DAM}}}, "pairs": n,
    "seconds": s}``. Raises ValueError for empty ``betas`` / ``lambdas``, a non-positive beta or batches < 1."""
    if not betas or not lambdas or min(betas) <= 0 or min(lambdas) < 0 or batches < 1:
        raise ValueError("grad_norms: expected betas > 0, lambdas >= 0 (both non-empty) and batches >= 1")
    t0 = time.time()
    layout = RunLayout(run_dir)
    cfg = DriftConfig.from_dict(run_settings(Path(run_dir)))
    run = open_run(cfg, model_dir)
    rows, _, instruction = load_rows(cfg, None, None, {})
    pairs = [encode(run.tokenizer, r, cfg, instruction) for r in rows]
    files = layout.files(stage)
    gens, masks = Generations.load(files.generations), Masks.load(files.masks)
    ref = Reference.load(files.reference) if files.reference.is_file() else None
    items = self_play_examples(pairs, gens, masks, ref, "drift")
    bs = cfg.per_device_train_batch_size
    items = items[: bs * batches]
    model = run.policy.get()
    model.train()
    dev = run.accelerator.device
    params = [p for p in model.parameters() if p.requires_grad]
    g_dam = {b: torch.zeros(sum(p.numel() for p in params), device=dev) for b in betas}
    g_oal = torch.zeros_like(next(iter(g_dam.values())))
    dam_vals = {b: 0.0 for b in betas}
    oal_val, nb = 0.0, 0
    for start in range(0, len(items), bs):
        chunk = items[start: start + bs]
        if ref is None:  # the stage's reference is the model it trains from: its own sums, no grad
            with torch.no_grad(), run.precision.autocast():
                rc, rr = masked_sums(run, model, chunk)
            for it, c, r in zip(chunk, rc.float().tolist(), rr.float().tolist()):
                it.reference_chosen, it.reference_rejected = c, r
        b, cm, rm = self_play_batch(chunk, run.tokenizer.pad_token_id, dev)
        with run.precision.autocast():
            logits = response_logits(model, b)
        for i, beta in enumerate(betas):
            out = self_play_output(logits, b, cm, rm, chunk, run, beta=beta, oal_weight=1.0)
            g_dam[beta] += _flat_grad(out.self_play_loss, params)
            dam_vals[beta] += float(out.self_play_loss.detach())
            if i == 0:
                g_oal += _flat_grad(out.oal_loss, params)
                oal_val += float(out.oal_loss.detach())
        nb += 1
    result: Dict[str, object] = {"pairs": len(items), "batches": nb, "stage": stage, "beta": {}}
    on = float(g_oal.norm()) / nb
    for beta in betas:
        dn = float(g_dam[beta].norm()) / nb
        cos = float(torch.nn.functional.cosine_similarity(g_dam[beta], g_oal, dim=0)) if dn and on else float("nan")
        dv, ov = dam_vals[beta] / nb, oal_val / nb
        result["beta"][str(beta)] = {
            "dam_grad_norm": dn, "oal_grad_norm": on, "cosine": cos, "dam_loss": dv, "oal_loss": ov,
            "ratio": {str(lam): (lam * on / dn if dn else math.inf) for lam in lambdas},
            "value_ratio": {str(lam): (lam * ov / dv if dv else math.inf) for lam in lambdas},
        }
    result["seconds"] = round(time.time() - t0, 1)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="self-play run folder with iter_<stage>/generations.pt, masks.pt")
    p.add_argument("--model", required=True, help="the model stage <stage> trains from")
    p.add_argument("--betas", type=float, nargs="+", required=True)
    p.add_argument("--lambdas", type=float, nargs="+", required=True)
    p.add_argument("--stage", type=int, default=1)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    res = grad_norms(Path(args.run), Path(args.model), args.betas, args.lambdas, args.stage, args.batches)
    text = json.dumps(res, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
