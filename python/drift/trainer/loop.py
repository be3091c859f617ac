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
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

import drift
from drift import assets, data, losses
from drift.rouge import rouge
from drift.trainer import io, rundir
from drift.trainer.config import DriftConfig
from drift.trainer.precision import Precision, check_accelerator, resolve_precision

SELF_PLAY_METHODS = ("spin", "drift", "drift_no_dam", "drift_no_oal")
DAM_METHODS = ("drift", "drift_no_oal")  # self-play sums over LCS difference tokens only
OAL_METHODS = ("drift", "drift_no_dam")  # + oal_weight * L_OAL


def _fault_point(name: str) -> None:
    """Test hook: SIGKILL this process at the named point (``DRIFT_FAULT_INJECT=<name>``)."""
    if os.environ.get("DRIFT_FAULT_INJECT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# =============================================================================================
# setup: tokenizer, encoding, model
@dataclass
class Pair:
    """One training/eval example as token ids: the prompt (chat-formatted) and ground truth y (+ EOS)."""

    prompt_ids: List[int]
    response_ids: List[int]
    response_text: str
    prompt_truncated: bool = False
    response_truncated: bool = False  # cut at max_response_length: no EOS appended
    prompt_text: str = ""  # the prompt as given (before truncation and the chat template)


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
    kind = "sft" if config.method == "sft" else "self_play"
    for k in range(1, config.iterations + 1):
        stages.append(Stage(k, kind, config.num_train_epochs, k))
    for e in range(config.extra_epochs_on_fixed_data):
        stages.append(Stage(2 + e, "self_play", 1, 1))
    return stages


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:  # a missing folder reads as a (malformed) hub repo id to transformers
        raise FileNotFoundError(f"model_name_or_path: {path!r} is not a model folder here and could not be "
                                f"loaded as a hub model ({str(e).splitlines()[0]})") from e
    return prepare_tokenizer(tok, f"the tokenizer of {path}")


def prepare_tokenizer(tok, name: str):
    """Pad with EOS where the tokenizer has no pad token; refuse one without EOS."""
    if tok.eos_token_id is None:
        raise ValueError(f"model_name_or_path: {name} has no EOS token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def encode(tokenizer, example: data.Example, config: DriftConfig, instruction: Optional[str]) -> Pair:
    """Prompt text truncated to ``max_prompt_length`` tokens, wrapped in the chat template; y + EOS.

    A response longer than ``max_response_length`` tokens is cut there and gets no EOS: training
    on ``cut + EOS`` would teach the model to stop mid-sentence. :func:`truncation_report` counts
    the cuts (the trainer warns and logs them).
    """
    full = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    ids = full[: config.max_prompt_length]
    text = tokenizer.decode(ids)
    content = f"{instruction}\n\n{text}" if instruction else text
    turns = [{"role": "user", "content": content}]
    if example.messages:  # a conversation: its turns, the last user turn truncated like a prompt
        last = max(i for i, (role, _) in enumerate(example.messages) if role == "user")
        turns = [{"role": r, "content": content if i == last else c} for i, (r, c) in enumerate(example.messages)]
    if config.use_chat_template and getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template(turns, add_generation_prompt=True)
        prompt = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
    else:
        prompt = tokenizer("\n".join(t["content"] for t in turns) + "\n", add_special_tokens=True)["input_ids"]
    response = tokenizer(example.response, add_special_tokens=False)["input_ids"]
    if len(response) > config.max_response_length:
        return Pair(prompt, response[: config.max_response_length], example.response, len(full) > len(ids), True,
                    example.prompt)
    return Pair(prompt, response + [tokenizer.eos_token_id], example.response, len(full) > len(ids), False,
                example.prompt)


def truncation_report(train_set: Sequence[Pair], eval_set: Sequence[Pair], stats: Dict[str, int], config: DriftConfig,
                      pairs_per_step: int) -> Dict[str, Any]:
    """The ``kind: data`` record (example counts, cuts, dropped rows) and a warning line per problem."""
    cut_y = sum(p.response_truncated for p in train_set)
    cut_x = sum(p.prompt_truncated for p in train_set) + sum(p.prompt_truncated for p in eval_set)
    left_out = len(train_set) % pairs_per_step
    rec: Dict[str, Any] = {"kind": "data", "global_step": 0, "train_examples": len(train_set),
                           "eval_examples": len(eval_set), "responses_truncated": cut_y, "prompts_truncated": cut_x,
                           "pairs_left_out_per_epoch": left_out, **stats}
    warnings = []
    if cut_y:
        warnings.append(f"max_response_length: {cut_y} of {len(train_set)} training responses are longer than "
                        f"{config.max_response_length} tokens and were cut (without EOS, so the model is not taught "
                        "to stop there); raise max_response_length to keep them whole")
    if left_out:
        warnings.append(f"num_train_examples: {left_out} of {len(train_set)} training pairs do not fill an optimizer "
                        f"step ({pairs_per_step} pairs) and are left out of each epoch (a different {left_out} each "
                        "epoch)")
    return {"record": rec, "warnings": warnings}


LINEAGE_FILE = "drift_lora_lineage.json"


def lora_lineage(parent: Path, target: Path) -> Dict[str, Any]:
    """How to rebuild the model of an adapter-only stage saved at ``target`` whose training started from ``parent``.

    ``base_model``: the full model at the root (resolved path or hub name); ``adapters``: the
    adapter folders to merge onto it in order, relative to ``target`` (the run folder can move).
    """
    parent = Path(parent)
    if (parent / LINEAGE_FILE).is_file():
        old = io.read_json(parent / LINEAGE_FILE)
        chain = [os.path.relpath((parent / a).resolve(), target.resolve()) for a in old["adapters"]]
        base = old["base_model"]
    else:
        chain, base = [], str(parent.resolve()) if parent.exists() else str(parent)
    return {"base_model": base, "adapters": chain + ["."]}


def load_model(path: str | Path, config: DriftConfig, device: torch.device):
    """A stage's model: a full checkpoint, or (LoRA, adapter-only) its base with every adapter of its lineage merged."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    lineage = io.read_json(path / LINEAGE_FILE) if (path / LINEAGE_FILE).is_file() else None
    source = lineage["base_model"] if lineage else str(path)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, config.dtype))
    if lineage:
        from peft import PeftModel

        for rel in lineage["adapters"]:
            model = PeftModel.from_pretrained(model, str((path / rel).resolve())).merge_and_unload()
    return prepare_model(model, config, device)


def prepare_model(model, config: DriftConfig, device: torch.device):
    """Move ``model`` to the accelerator's device and apply the config's memory settings."""
    model.to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


class Policy:
    """The current model: kept in memory between stages, loaded lazily from ``path`` when absent."""

    def __init__(self, path: str | Path, config: DriftConfig, device: torch.device) -> None:
        self.path, self.config, self.device, self.model = Path(path), config, device, None

    def get(self):
        if self.model is None:
            self.model = load_model(self.path, self.config, self.device)
        return self.model

    def set(self, path: Path, model=None) -> None:
        self.path, self.model = Path(path), model


# =============================================================================================
# batches: left-padded prompts, right-padded responses, so every response starts at column P
@dataclass
class Batch:
    input_ids: torch.Tensor  # (N, P + R)
    attention_mask: torch.Tensor  # (N, P + R)
    position_ids: torch.Tensor  # (N, P + R)
    labels: torch.Tensor  # (N, R) response ids (pad after each response's end)
    response_mask: torch.Tensor  # (N, R) bool, True on real response tokens (from lengths)


def collate(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
            device: torch.device) -> Batch:
    """Pack N (prompt, response) id lists; masks come from lengths (pad may equal EOS)."""
    n = len(prompts)
    p = max(len(x) for x in prompts)
    r = max(max(len(y) for y in responses), 1)
    ids = torch.full((n, p + r), pad_id, dtype=torch.long)
    attn = torch.zeros((n, p + r), dtype=torch.long)
    for i, (x, y) in enumerate(zip(prompts, responses)):
        ids[i, p - len(x): p] = torch.tensor(x, dtype=torch.long)
        ids[i, p: p + len(y)] = torch.tensor(y, dtype=torch.long)
        attn[i, p - len(x): p + len(y)] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids.to(device), attn.to(device), pos.to(device), ids[:, p:].to(device),
                 attn[:, p:].bool().to(device))


def pad_masks(masks: Sequence[Sequence[bool]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros((len(masks), width), dtype=torch.bool)
    for i, m in enumerate(masks):
        out[i, : len(m)] = torch.as_tensor(list(m), dtype=torch.bool)
    return out.to(device)


def response_logits(model, batch: Batch) -> torch.Tensor:
    """(N, R, V) logits where ``[:, j]`` scores response token j: only response positions reach lm_head."""
    r = batch.labels.shape[1]
    out = model(input_ids=batch.input_ids[:, :-1], attention_mask=batch.attention_mask[:, :-1],
                position_ids=batch.position_ids[:, :-1], logits_to_keep=r, use_cache=False)
    return out.logits


# =============================================================================================
# stage: generate
def generate(run: "Run", model, prompts: List[List[int]], *, sample: bool, seed: int, desc: str,
             batch_size: Optional[int] = None) -> List[List[int]]:
    """Responses (ids, cut after the first EOS) for ``prompts``, batched, left-padded, sharded by batch.

    ``batch_size`` prompts per generate() call (default ``generation_batch_size``; evaluation
    passes ``per_device_eval_batch_size``).
    """
    if run.config.generation_backend == "vllm":
        return _generate_vllm(run, prompts, sample=sample, seed=seed)
    from tqdm.auto import tqdm

    acc, cfg, tok = run.accelerator, run.config, run.tokenizer
    bs = batch_size or cfg.generation_batch_size
    batches = list(range(0, len(prompts), bs))
    mine = batches[acc.process_index:: acc.num_processes]
    results: List[tuple] = []
    was_training = model.training
    model.eval()
    for start in tqdm(mine, desc=desc, unit="batch", disable=not acc.is_local_main_process):
        chunk = prompts[start: start + bs]
        b = collate(chunk, [[]] * len(chunk), tok.pad_token_id, acc.device)
        p = max(len(x) for x in chunk)
        kwargs: Dict[str, Any] = dict(do_sample=sample, max_new_tokens=cfg.max_new_tokens,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        if sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
            torch.manual_seed(seed * 1_000_003 + start)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.no_grad(), run.precision.autocast():
            out = model.generate(input_ids=b.input_ids[:, :p], attention_mask=b.attention_mask[:, :p], **kwargs)
        for i, row in enumerate(out[:, p:].tolist()):
            results.append((start + i, _cut_at_eos(row, tok.eos_token_id)))
        _fault_point(f"{desc}:batch{start // bs + 1}")
    model.train(was_training)
    return _gather_ordered(acc, results, len(prompts))


def provided_generations(path: Path, pairs: List[Pair], tokenizer) -> List[List[int]]:
    """Token ids (+ EOS) of the opponent answers in ``path``, a JSONL of ``prompt`` / ``generation`` records
    (what ``drift generate --split train`` writes), matched to the training pairs by prompt text."""
    by_prompt: Dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"opponent_generations: {path}, line {i}: invalid JSON ({e.msg})") from None
        if not (isinstance(rec, dict) and isinstance(rec.get("prompt"), str) and isinstance(rec.get("generation"), str)):
            raise ValueError(f"opponent_generations: {path}, line {i}: expected an object with string 'prompt' "
                             "and 'generation'")
        by_prompt[rec["prompt"].strip()] = rec["generation"].strip()
    missing = [p.prompt_text for p in pairs if p.prompt_text not in by_prompt]
    if missing:
        raise ValueError(f"opponent_generations: {path} has no generation for {len(missing)} of {len(pairs)} "
                         f"training prompts (first: {missing[0][:60]!r})")
    eos = tokenizer.eos_token_id
    return [tokenizer(by_prompt[p.prompt_text], add_special_tokens=False)["input_ids"] + [eos] for p in pairs]


def _cut_at_eos(ids: List[int], eos: int) -> List[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def _generate_vllm(run: "Run", prompts: List[List[int]], *, sample: bool, seed: int) -> List[List[int]]:
    from vllm import LLM, SamplingParams  # only reachable when validate() found vllm

    cfg = run.config
    llm = LLM(model=str(run.policy.path), dtype=run.precision.vllm_dtype, seed=seed, gpu_memory_utilization=0.3)
    params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature if sample else 0.0,
                            top_p=cfg.top_p if sample else 1.0, seed=seed)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    del llm
    return [_cut_at_eos(list(o.outputs[0].token_ids), run.tokenizer.eos_token_id) for o in outs]


def _gather_ordered(acc, results: List[tuple], n: int) -> List[Any]:
    from accelerate.utils import gather_object

    if acc.num_processes > 1:
        results = gather_object(results)
    ordered: List[Any] = [None] * n
    for i, value in results:
        ordered[i] = value
    return ordered


def stage_generate(run: "Run", d: Path, pairs: List[Pair], seed: int) -> Dict[str, Any]:
    path = d / "generations.pt"
    if path.is_file():
        return io.torch_load(path)
    t0 = time.perf_counter()
    given = run.config.opponent_generations
    if given and d.name == "iter_1":  # bring-your-own opponent answers for the first iteration
        ids = provided_generations(Path(given), pairs, run.tokenizer)
    else:
        ids = generate(run, run.policy.get(), [p.prompt_ids for p in pairs], sample=run.config.do_sample,
                       seed=seed, desc=f"{d.name}: generate")
    out = {"ids": ids, "seconds": time.perf_counter() - t0}
    if run.accelerator.is_main_process:
        io.torch_save(path, out)
    run.accelerator.wait_for_everyone()
    return out


# =============================================================================================
# stage: LCS masks (DAM)
def stage_masks(run: "Run", d: Path, pairs: List[Pair], generated: List[List[int]]) -> Dict[str, Any]:
    path = d / "masks.pt"
    if path.is_file():
        return io.torch_load(path)
    t0 = time.perf_counter()
    ys = [torch.tensor(p.response_ids, dtype=torch.long) for p in pairs]
    yps = [torch.tensor(g if g else [], dtype=torch.long) for g in generated]
    m = drift.lcs_mask(ys, yps)
    lcs = [int(v) for v in m.lcs_length]
    out = {
        "chosen": [list(map(bool, v)) for v in m.y],
        "rejected": [list(map(bool, v)) for v in m.y_prime],
        "lcs_length": lcs,
        "gamma": sum(k / len(p.response_ids) for k, p in zip(lcs, pairs)) / len(pairs),
        "seconds": time.perf_counter() - t0,
    }
    if run.accelerator.is_main_process:
        io.torch_save(path, out)
    run.accelerator.wait_for_everyone()
    return out


def self_play_masks(method: str, pair: Pair, generated: List[int], masks: Dict[str, Any], i: int):
    """The (chosen, rejected) token masks the self-play sums run over for ``method``."""
    if method in DAM_METHODS:
        return masks["chosen"][i], masks["rejected"][i]
    return [True] * len(pair.response_ids), [True] * len(generated)


# =============================================================================================
# stage: reference (opponent) log-probs, once per iteration, with the model before training
@dataclass
class Item:
    """One self-play training pair with everything the loss needs."""

    prompt_ids: List[int]
    chosen_ids: List[int]
    rejected_ids: List[int]
    chosen_mask: List[bool]
    rejected_mask: List[bool]
    reference_chosen: float = 0.0
    reference_rejected: float = 0.0


def self_play_batch(items: Sequence[Item], pad_id: int, device: torch.device):
    """Chosen rows then rejected rows in one batch (one forward); masks padded to R."""
    prompts = [it.prompt_ids for it in items] * 2
    responses = [it.chosen_ids for it in items] + [it.rejected_ids for it in items]
    b = collate(prompts, responses, pad_id, device)
    r = b.labels.shape[1]
    return b, pad_masks([it.chosen_mask for it in items], r, device), pad_masks([it.rejected_mask for it in items], r, device)


def stage_reference(run: "Run", d: Path, items: List[Item]) -> Dict[str, Any]:
    path = d / "reference.pt"
    if path.is_file():
        return io.torch_load(path)
    acc, cfg = run.accelerator, run.config
    model = run.policy.get()
    model.eval()
    t0 = time.perf_counter()
    bs = cfg.precompute_ref_batch_size or cfg.per_device_eval_batch_size
    starts = list(range(0, len(items), bs))[acc.process_index:: acc.num_processes]
    results = []
    with torch.no_grad(), run.precision.autocast():
        for s in starts:
            chunk = items[s: s + bs]
            b, cm, rm = self_play_batch(chunk, run.tokenizer.pad_token_id, acc.device)
            logits = response_logits(model, b)
            n = len(chunk)
            c = losses.token_logps(logits[:n], b.labels[:n], cm).sum(-1)
            r = losses.token_logps(logits[n:], b.labels[n:], rm).sum(-1)
            results += [(s + i, (float(c[i]), float(r[i]))) for i in range(n)]
    model.train()
    values = _gather_ordered(acc, results, len(items))
    out = {"chosen": [v[0] for v in values], "rejected": [v[1] for v in values], "seconds": time.perf_counter() - t0}
    if acc.is_main_process:
        io.torch_save(path, out)
    acc.wait_for_everyone()
    return out


# =============================================================================================
# stage: train
def oal_target_mask(items: Sequence["Item"], response_mask: torch.Tensor, eos_id: int) -> torch.Tensor:
    """V(y) for OAL: the tokens of y except the EOS the trainer appended (ours).

    EOS is not vocabulary of the summary; pushing ``max_j p(EOS | x, y'_<j)`` up raises EOS at
    whichever position already favours it - often the first - and the model learns to stop
    at once (seen on the demo: empty outputs after one iteration).
    """
    mask = response_mask.clone()
    for i, it in enumerate(items):
        if it.chosen_ids and it.chosen_ids[-1] == eos_id:
            mask[i, len(it.chosen_ids) - 1] = False
    return mask


def compute_loss(model, items: Sequence[Any], kind: str, run: "Run") -> Dict[str, torch.Tensor]:
    """The method's loss on one micro-batch; returns the differentiable ``loss`` and logged parts.

    SFT: mean token cross-entropy on y. Self-play: :func:`drift.drift_loss` with the method's
    masks (DAM or full) and ``oal_weight`` (0 for spin and drift_no_oal); the OAL max runs over
    all generated positions of y' and its targets are the ids of y without its final EOS.
    """
    cfg, pad, device = run.config, run.tokenizer.pad_token_id, run.accelerator.device
    if kind == "sft":
        b = collate([it.prompt_ids for it in items], [it.response_ids for it in items], pad, device)
        lp = losses.token_logps(response_logits(model, b), b.labels, b.response_mask)
        loss = -lp.sum() / b.response_mask.sum()
        return {"loss": loss, "tokens": b.attention_mask.sum()}
    b, cm, rm = self_play_batch(items, pad, device)
    n = len(items)
    logits = response_logits(model, b)
    ref_c = torch.tensor([it.reference_chosen for it in items], dtype=torch.float32, device=device)
    ref_r = torch.tensor([it.reference_rejected for it in items], dtype=torch.float32, device=device)
    if cfg.loss_type != "sigmoid":
        return _other_loss_type(logits, b, cm, rm, ref_c, ref_r, items, run)
    out = losses.drift_loss(
        logits[:n], b.labels[:n], cm, logits[n:], b.labels[n:], rm, ref_c, ref_r,
        oal_targets=b.labels[:n], oal_targets_mask=oal_target_mask(items, b.response_mask[:n], run.tokenizer.eos_token_id),
        rejected_response_mask=b.response_mask[n:],
        beta=cfg.beta, oal_weight=cfg.oal_weight if cfg.method in OAL_METHODS else 0.0,
    )
    return {
        "loss": out.loss, "self_play_loss": out.self_play_loss.detach(), "oal_loss": out.oal_loss.detach(),
        "rewards/chosen": out.chosen_rewards.mean(), "rewards/rejected": out.rejected_rewards.mean(),
        "rewards/margins": out.margins.mean(), "rewards/accuracy": (out.margins > 0).float().mean(),
        "tokens": b.attention_mask.sum(),
    }


def self_play_term(h: torch.Tensor, beta: float, loss_type: str) -> torch.Tensor:
    """Per-pair self-play loss of the log-ratio difference ``h = (pc - rc) - (pr - rr)`` (docs/METHOD.md section 0).

    sigmoid: ``-logsigmoid(beta h)`` (SPIN/DPO); hinge: ``relu(1 - beta h)`` (SLiC);
    ipo: ``(h - 1 / (2 beta))^2`` (IPO, on the same masked sums as the others).
    """
    if loss_type == "sigmoid":
        return -torch.nn.functional.logsigmoid(beta * h)
    if loss_type == "hinge":
        return torch.relu(1 - beta * h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"loss_type: expected one of sigmoid, hinge, ipo, got {loss_type!r}")


def _other_loss_type(logits, b: "Batch", cm, rm, ref_c, ref_r, items, run: "Run") -> Dict[str, torch.Tensor]:
    """compute_loss for loss_type hinge / ipo: the same masked sums and OAL term, another self-play loss."""
    cfg, n = run.config, len(items)
    pc = losses.token_logps(logits[:n], b.labels[:n], cm).sum(-1)
    pr = losses.token_logps(logits[n:], b.labels[n:], rm).sum(-1)
    h = (pc - ref_c) - (pr - ref_r)
    sp = self_play_term(h, cfg.beta, cfg.loss_type).mean()
    weight = cfg.oal_weight if cfg.method in OAL_METHODS else 0.0
    oal = torch.zeros((), dtype=sp.dtype, device=sp.device)
    if weight > 0:
        oal = losses.oal_loss(logits[n:], b.labels[:n], logits_mask=b.response_mask[n:],
                              targets_mask=oal_target_mask(items, b.response_mask[:n], run.tokenizer.eos_token_id))
    chosen, rejected = cfg.beta * (pc - ref_c).detach(), cfg.beta * (pr - ref_r).detach()
    return {
        "loss": sp + weight * oal.to(sp.dtype), "self_play_loss": sp.detach(), "oal_loss": oal.detach(),
        "rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
        "rewards/margins": (chosen - rejected).mean(), "rewards/accuracy": (chosen > rejected).float().mean(),
        "tokens": b.attention_mask.sum(),
    }


def steps_per_epoch(run: "Run", n_items: int) -> int:
    cfg = run.config
    return n_items // (cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * run.accelerator.num_processes)


def stage_steps(run: "Run", stage: "Stage", n_items: int) -> int:
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


def _progress(acc, name: str, start: int, total: int):
    """The training progress bar (optimizer steps, with loss, lr and step/s), on the local main process."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"{name}: train", unit="step", dynamic_ncols=True,
                disable=not acc.is_local_main_process)


def _latest_train_state(d: Path) -> Optional[Dict[str, Any]]:
    pointer = d / "train_state.json"
    if pointer.is_file():
        state = io.read_json(pointer)
        if (d / state["dir"]).is_dir():
            return state
    return None


SCALER_FILE = "drift_grad_scaler.pt"


def _save_train_state(run: "Run", d: Path, step: int, scaler=None) -> None:
    acc = run.accelerator
    tmp = d / f".train_state-{step}.tmp"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp), safe_serialization=False)
    acc.wait_for_everyone()
    if acc.is_main_process:
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / SCALER_FILE)
        final = d / f"train_state-{step}"
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        io.write_json(d / "train_state.json", {"step": step, "dir": final.name})
        for old in d.glob("train_state-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def stage_train(run: "Run", stage: Stage, d: Path, items: List[Any], step_offset: int,
                eval_set: Optional[List[Pair]] = None):
    """Train the policy for ``stage.epochs`` epochs on ``items``; save ``d/model``; return the model.

    With ``eval_steps``, every ``eval_steps`` optimizer steps (but the stage's last, which the
    iteration record scores) the model in training is evaluated on ``eval_set`` and a ``kind:
    eval`` record logged at the global step; like step records, those after the last saved
    state are dropped and rewritten on resume.

    Data order: epoch ``e`` uses a permutation seeded by (seed, stage, e); optimizer step ``s``
    takes the next ``per_device_train_batch_size * gradient_accumulation_steps * processes``
    items, micro-batch ``a`` of process ``p`` being chunk ``a * processes + p`` - so one process
    with doubled accumulation sees exactly what two processes see. A trailing remainder smaller
    than one optimizer step is left out of that epoch.
    """
    acc, cfg = run.accelerator, run.config
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
    wrapped, optimizer = acc.prepare(model, optimizer)
    params = [p for p in wrapped.parameters() if p.requires_grad]  # FSDP swaps in sharded parameters
    per_epoch = steps_per_epoch(run, len(items))
    total = stage_steps(run, stage, len(items))
    bs, accum, world, rank = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, acc.num_processes, acc.process_index

    warm_start = stage.index == 0 and stage.kind == "sft"
    peak = cfg.sft_learning_rate if warm_start and cfg.sft_learning_rate is not None else cfg.learning_rate
    scaler = run.precision.grad_scaler() if getattr(acc, "scaler", None) is None else None  # fp16 loss scaling
    start = 0
    state = _latest_train_state(d)
    if state is not None:
        acc.load_state(str(d / state["dir"]))
        start = int(state["step"])
        if scaler is not None and (d / state["dir"] / SCALER_FILE).is_file():
            scaler.load_state_dict(torch.load(d / state["dir"] / SCALER_FILE, weights_only=False))
    run.log.drop(lambda r: r.get("kind") in ("step", "eval") and r.get("iteration") == stage.index
                 and r["step"] > start)
    eval_every = cfg.eval_steps if cfg.eval_steps and cfg.eval_metric != "none" and eval_set else 0
    if eval_every and acc.distributed_type == "FSDP":
        raise ValueError("eval_steps: evaluating during training is not supported under FSDP (the sharded model "
                         "cannot generate batch by batch on each process); drop eval_steps")

    t_train = time.perf_counter()
    bar = _progress(acc, d.name, start, total)
    for step in range(start, total):
        t0 = time.perf_counter()
        epoch, s = divmod(step, per_epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + stage.index * 1009 + epoch)
        order = torch.randperm(len(items), generator=gen).tolist()
        chunk = order[s * bs * accum * world: (s + 1) * bs * accum * world]
        lr = lr_at(cfg, step, total, peak)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sums: Dict[str, torch.Tensor] = {}
        for a in range(accum):
            mine = [items[i] for i in chunk[(a * world + rank) * bs: (a * world + rank + 1) * bs]]
            sync = a == accum - 1
            with contextlib.nullcontext() if sync else acc.no_sync(wrapped):
                with run.precision.autocast():
                    parts = compute_loss(wrapped, mine, stage.kind, run)
                loss = parts["loss"] / accum
                acc.backward(scaler.scale(loss) if scaler is not None else loss)
            for k, v in parts.items():
                v = v.detach().float()
                sums[k] = sums.get(k, 0.0) + (v if k == "tokens" else v / accum)
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        if scaler is not None:
            scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        keys = sorted(sums)
        vec = acc.reduce(torch.stack([sums[k] for k in keys]).to(acc.device), reduction="mean")
        record = {k: float(v) for k, v in zip(keys, vec)}
        seconds = time.perf_counter() - t0
        record["tokens_per_s"] = record.pop("tokens") * world / seconds
        record.update(kind="step", iteration=stage.index, step=step + 1, epoch=epoch + (s + 1) / per_epoch,
                      global_step=step_offset + step + 1, lr=lr, step_s=seconds,
                      method="sft" if stage.kind == "sft" else cfg.method,
                      grad_norm=None if grad_norm is None else float(getattr(grad_norm, "full_tensor", lambda: grad_norm)()))
        if cfg.method not in OAL_METHODS:
            record.pop("oal_loss", None)  # not computed by this method: absent, not 0
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{lr:.3g}", refresh=False)
        if (step + 1) % cfg.logging_steps == 0 or step + 1 == total:
            run.emit(record)
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < total:
            ev = evaluate_pairs(run, acc.unwrap_model(wrapped), eval_set, f"{d.name}: eval@{step + 1}")
            run.emit({"kind": "eval", "iteration": stage.index, "step": step + 1,
                      "global_step": step_offset + step + 1, "method": record["method"], "run": cfg.label,
                      "rouge1": ev["rouge1"], "rouge2": ev["rouge2"], "rougeL": ev["rougeL"], "eval_s": ev["seconds"]})
        if (step + 1) % cfg.save_steps == 0 and step + 1 < total:
            _save_train_state(run, d, step + 1, scaler)
        _fault_point(f"{d.name}: train:step{step + 1}")
    bar.close()
    train_s = time.perf_counter() - t_train

    model = acc.unwrap_model(wrapped, keep_fp32_wrapper=False)  # drop a launcher's autocast wrapper
    state_dict = acc.get_state_dict(wrapped)
    info = {"steps": total, "resumed_from_step": start, "seconds": train_s}
    if cfg.use_peft and not cfg.lora_save_merged:  # the LoRA adapter alone, replayed onto its base by load_model
        _save_stage_model(run, d, model, state_dict, info, lora_lineage(run.policy.path, d / "model"))
    if cfg.use_peft:
        model = model.merge_and_unload()  # the next stage starts from the merged weights
        state_dict = model.state_dict() if acc.is_main_process else None
    if not cfg.use_peft or cfg.lora_save_merged:
        _save_stage_model(run, d, model, state_dict, info, None)
    if acc.is_main_process:
        io.remove_stale_temporaries(d)
        for old in d.glob("train_state-*"):
            shutil.rmtree(old, ignore_errors=True)
        (d / "train_state.json").unlink(missing_ok=True)
    acc.wait_for_everyone()
    acc.free_memory()
    # FSDP sharded the model in place: the next stage reloads the saved full weights.
    return None if acc.distributed_type == "FSDP" else model


# =============================================================================================
# stage: evaluate
def evaluate_pairs(run: "Run", model, pairs: List[Pair], desc: str, diagnostics: bool = False) -> Dict[str, Any]:
    """Greedy generations for the held-out ``pairs`` in batches of ``per_device_eval_batch_size``, scored by
    ROUGE-1/2/L: the scores, ``seconds``, predictions, prompts and references; with ``diagnostics``, also
    the mechanism diagnostics against those generations."""
    t0 = time.perf_counter()
    ids = generate(run, model, [p.prompt_ids for p in pairs], sample=False, seed=0, desc=desc,
                   batch_size=run.config.per_device_eval_batch_size)
    predictions = [run.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
    scores = rouge(predictions, [p.response_text for p in pairs])
    out = {**scores, "seconds": time.perf_counter() - t0, "predictions": predictions,
           "prompts": [p.prompt_text for p in pairs],
           "references": [p.response_text for p in pairs]}
    if diagnostics and pairs:
        out["diagnostics"] = eval_diagnostics(run, model, pairs, ids)
    return out


def eval_diagnostics(run: "Run", model, pairs: List[Pair], generated: List[List[int]]) -> Dict[str, Any]:
    """drift.diagnostics.mechanism_diagnostics of the held-out pairs against the stage's greedy
    generations (teacher-forced, deterministic; every process computes the same numbers)."""
    from drift.diagnostics import mechanism_diagnostics

    eos = run.tokenizer.eos_token_id
    with torch.no_grad(), run.precision.autocast():
        return mechanism_diagnostics(model, [p.prompt_ids for p in pairs], [p.response_ids for p in pairs],
                                     [list(g) for g in generated], ignore_ids=[] if eos is None else [eos],
                                     batch_size=run.config.per_device_eval_batch_size)


def stage_eval(run: "Run", d: Path, pairs: List[Pair]) -> Optional[Dict[str, Any]]:
    """``d/eval.json``: the stage model's held-out evaluation (None, and nothing written, with eval_metric none)."""
    if run.config.eval_metric == "none":
        return None
    path = d / "eval.json"
    if path.is_file():
        return io.read_json(path)
    # the diagnostics only where they are stored and logged: the stage's evaluation, not eval_steps'
    out = evaluate_pairs(run, run.policy.get(), pairs, f"{d.name}: eval", diagnostics=run.config.eval_diagnostics)
    if run.accelerator.is_main_process:
        io.write_json(path, out)
    run.accelerator.wait_for_everyone()
    return out


# =============================================================================================
# the run
@dataclass
class Run:
    config: DriftConfig
    accelerator: Any
    tokenizer: Any
    policy: Policy
    log: io.MetricsLog
    precision: Optional[Precision] = None  # default: resolved from config and accelerator.device

    def __post_init__(self) -> None:
        if self.precision is None:
            self.precision = resolve_precision(self.config, self.accelerator.device)

    def emit(self, record: Dict[str, Any]) -> None:
        """Append to metrics.jsonl and forward numbers to the configured accelerate trackers."""
        self.log.append(record)
        if self.config.report_to:
            nums, step = tracker_payload(record)
            self.accelerator.log(nums, step=step)


def tracker_payload(record: Dict[str, Any]):
    """``(values, step)`` for the trackers: the record's numbers as ``<kind>/<name>``, at its global step.

    Step records carry the optimizer step; iteration records the global step at the end of
    their stage (0 for the base model), so per-iteration curves (ROUGE, gamma) line up with the loss.
    """
    nums = {f"{record['kind']}/{k}": v for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "global_step"}
    return nums, int(record["global_step"])


def _check_run_dir(out: Path, config: DriftConfig, acc, fp: Dict[str, Any]) -> None:
    """Refuse to resume a run directory written with other settings or data; then record this run's."""
    rundir.check_resume(out, config, fp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        rundir.record(out, config, fp)
        io.remove_stale_temporaries(out)
    acc.wait_for_everyone()


def _items(pairs: List[Pair], gens: Dict[str, Any], masks: Dict[str, Any], ref: Optional[Dict[str, Any]],
           method: str) -> List[Item]:
    out = []
    for i, (p, g) in enumerate(zip(pairs, gens["ids"])):
        cm, rm = self_play_masks(method, p, g, masks, i)
        it = Item(p.prompt_ids, p.response_ids, g, list(cm), list(rm))
        if ref is not None:
            it.reference_chosen, it.reference_rejected = ref["chosen"][i], ref["rejected"][i]
        out.append(it)
    return out


def make_accelerator(config: Optional[DriftConfig] = None):
    """An ``Accelerator``; on a machine without a GPU it is told so explicitly, which makes
    ``accelerate launch --multi_gpu --num_processes N`` (torchrun underneath) run N CPU
    processes with the gloo backend instead of N independent copies."""
    from accelerate import Accelerator

    no_gpu = not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())
    kwargs: Dict[str, Any] = {"cpu": True} if no_gpu else {}
    # accelerate maps `launch --use_fsdp` to FSDP on GPUs only; on CPUs it would silently run
    # DDP. FSDP2 (fully_shard) works over gloo, so it is switched on by hand there.
    fsdp_on_cpu = no_gpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_on_cpu:
        from accelerate.utils import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin()
    if config is not None:
        kwargs.update(log_with=config.report_to or None, project_dir=config.output_dir)
    acc = Accelerator(**kwargs)
    if fsdp_on_cpu and acc.num_processes > 1:
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        PartialState().distributed_type = acc.state.distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = kwargs["fsdp_plugin"]
    if config is not None:
        check_accelerator(acc, resolve_precision(config, acc.device))
    return acc


def _warn_low_precision_weights(config: DriftConfig) -> None:
    if config.dtype != "float32":
        print(f"drift train: warning: dtype {config.dtype} trains the {config.dtype} weights themselves (no float32 "
              "master copy), so updates below their rounding step are lost; for mixed precision keep dtype float32 "
              "and set bf16: true (or fp16: true)", file=sys.stderr)


class Records(list):
    """The per-iteration records :func:`train` returns, with the run's ``output_dir`` (a Path)."""

    output_dir: Optional[Path] = None


def _rows(config: DriftConfig, train_dataset: Any, eval_dataset: Any, stats: Dict[str, int]):
    """``(train rows, held-out rows, instruction)`` from the config's data, or from in-memory datasets."""
    if train_dataset is None:
        spec = data.resolve(config.data, config.eval_data, config.prompt_column, config.response_column,
                            config.instruction)
        tr, ev = data.load_splits(spec, config.num_train_examples, config.num_eval_examples, config.data_seed, stats,
                                  split_ids(config))
        return tr, ev, spec.instruction
    cols = (config.prompt_column or "prompt", config.response_column or "response")
    rows = data.in_memory_rows(train_dataset, *cols, "train_dataset", stats)
    pool = None if eval_dataset is None else data.in_memory_rows(eval_dataset, *cols, "eval_dataset", stats)
    tr, ev = data.split_rows(rows, pool, config.num_train_examples, config.num_eval_examples, config.data_seed,
                             split_ids(config))
    return tr, ev, config.instruction


def split_ids(config: DriftConfig) -> Optional[data.SplitIds]:
    """The row ids of ``config.split_file`` (None: the seeded shuffle)."""
    return None if config.split_file is None else data.read_split_file(config.split_file)


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

    config = _in_memory_config((config or DriftConfig()).validate(), model, train_dataset, eval_dataset)
    _warn_low_precision_weights(config)
    stats: Dict[str, int] = {}
    train_rows, eval_rows, instruction = _rows(config, train_dataset, eval_dataset, stats)
    fp = rundir.fingerprint(config, train_rows, eval_rows)
    notes: List[str] = []
    config = rundir.resolve_output_dir(config, fp, notes=notes)
    acc = make_accelerator(config)
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps * acc.num_processes
    if len(train_rows) < per_step:
        raise ValueError(f"num_train_examples: {len(train_rows)} pairs is less than one optimizer step ({per_step} = "
                         "per_device_train_batch_size x gradient_accumulation_steps x processes)")
    set_seed(config.seed)
    out = Path(config.output_dir)
    rundir.check_resume(out, config, fp)  # before anything is written or loaded

    with acc.main_process_first():
        model_path = config.model_name_or_path or str(assets.smollm2_model_dir())
    tok = load_tokenizer(model_path) if tokenizer is None else prepare_tokenizer(tokenizer, "tokenizer")
    train_set = [encode(tok, r, config, instruction) for r in train_rows]
    eval_set = [encode(tok, r, config, instruction) for r in eval_rows]
    _check_run_dir(out, config, acc, fp)  # the inputs are valid: the folder is this run's from here on
    if acc.is_main_process:
        for note in notes:
            print(f"drift train: {note}", file=sys.stderr)
        print(f"drift train: output_dir {out}", file=sys.stderr)
    report = truncation_report(train_set, eval_set, stats, config, per_step)
    if acc.is_main_process:
        for line in report["warnings"]:
            print(f"drift train: warning: {line}", file=sys.stderr)
    policy = Policy(model_path, config, acc.device)
    if model is not None and not _any_stage_trained(out, config):
        policy.model = prepare_model(model, config, acc.device)
    run = Run(config, acc, tok, policy, io.MetricsLog(out / "metrics.jsonl", acc.is_main_process))
    if config.report_to:
        acc.init_trackers("drift", config={k: str(v) for k, v in config.to_dict().items()})

    def record_iteration(index: int, name: str, ev: Optional[Dict[str, Any]], extra: Dict[str, Any],
                         global_step: int) -> None:
        if run.log.has(lambda r: r.get("kind") == "iteration" and r.get("iteration") == index):
            return
        scores = {} if ev is None else {"rouge1": ev["rouge1"], "rouge2": ev["rouge2"], "rougeL": ev["rougeL"],
                                        "eval_s": ev["seconds"]}  # eval_metric none: no scores
        diag = (ev or {}).get("diagnostics") or {}
        scores.update({f"diag_{k}": v for k, v in diag.items()  # its wall time stays in eval.json, like eval_s's parts
                       if k != "seconds" and (isinstance(v, (int, float)) or v is None)})
        rec = {"kind": "iteration", "iteration": index, "stage": name, "method": config.method, "run": config.label,
               **scores, "global_step": global_step, **extra}  # trackers plot it at the step the stage ended
        run.emit(rec)

    if not run.log.has(lambda r: r.get("kind") == "data"):
        run.emit(report["record"])
    if config.eval_base and config.eval_metric != "none":
        ev = stage_eval(run, out / "base", eval_set)
        record_iteration(-1, "base", ev, {}, 0)

    step_offset = 0
    for stage in plan(config):
        d = out / f"iter_{stage.index}"
        if acc.is_main_process:
            d.mkdir(parents=True, exist_ok=True)
            io.remove_stale_temporaries(d)  # leftovers of a killed run
        acc.wait_for_everyone()
        extra: Dict[str, Any] = {"kind_of_stage": stage.kind, "epochs": stage.epochs}
        trained = _stage_trained(d)
        items: List[Any] = train_set
        if stage.kind == "self_play":
            src = out / f"iter_{stage.data_from}"  # != d only for extra epochs on fixed data
            gens = stage_generate(run, src, train_set, seed=config.seed + stage.data_from)
            masks = stage_masks(run, src, train_set, gens["ids"])
            if not trained:
                ref = stage_reference(run, src, _items(train_set, gens, masks, None, config.method))
                items = _items(train_set, gens, masks, ref, config.method)
            extra.update(gamma=masks["gamma"], lcs_mask_s=masks["seconds"], generation_s=gens["seconds"],
                         reference_s=io.torch_load(src / "reference.pt")["seconds"],
                         generated_tokens=sum(len(g) for g in gens["ids"]) / len(gens["ids"]))
        if not trained:
            run.policy.set(d / "model", stage_train(run, stage, d, items, step_offset, eval_set))
        else:
            run.policy.set(d / "model", None)
            if acc.is_main_process:  # a kill between saving the model and dropping the training state
                for old in d.glob("train_state*"):
                    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        extra["train_s"] = io.read_json(_train_info(d))["seconds"]
        step_offset += stage_steps(run, stage, len(train_set))
        ev = stage_eval(run, d, eval_set)
        record_iteration(stage.index, f"iter_{stage.index}", ev, extra, step_offset)
        if config.save_total_limit and acc.is_main_process:
            prune_models(out, [s.index for s in plan(config) if s.index <= stage.index], config.save_total_limit)
        acc.wait_for_everyone()

    records = Records(r for r in run.log.records() if r.get("kind") == "iteration") if acc.is_main_process else Records()
    records.output_dir = out
    if acc.is_main_process:
        print(format_table(records))
    if config.report_to:
        acc.end_training()
    return records


PRUNED_FILE = "model_pruned.json"


def _save_stage_model(run: "Run", d: Path, model, state_dict, info: Dict[str, Any], lineage) -> None:
    """``d/model``: the weights (or a LoRA adapter with its lineage), the tokenizer and drift_train.json."""
    if not run.accelerator.is_main_process:
        return
    with io.atomic_dir(d / "model") as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        if lineage is not None:
            io.write_json(tmp / LINEAGE_FILE, lineage)
        run.tokenizer.save_pretrained(tmp)
        io.write_json(tmp / "drift_train.json", info)


def _train_info(d: Path) -> Path:
    """The stage's ``drift_train.json`` (in model/, or kept beside it once save_total_limit removed model/)."""
    return d / "model" / "drift_train.json" if (d / "model" / "drift_train.json").is_file() else d / PRUNED_FILE


def _any_stage_trained(out: Path, config: DriftConfig) -> bool:
    return any(_stage_trained(out / f"iter_{s.index}") for s in plan(config))


def _stage_trained(d: Path) -> bool:
    return (d / "model" / "drift_train.json").is_file() or (d / PRUNED_FILE).is_file()


def prune_models(out: Path, indices: Sequence[int], limit: int) -> None:
    """Keep the ``model/`` of only the last ``limit`` trained stages among ``indices`` (save_total_limit).

    A removed model leaves its ``drift_train.json`` as ``model_pruned.json``, so a rerun knows the
    stage was trained; LoRA adapters are kept whole (later adapter-only stages are rebuilt from them).
    """
    with_model = [i for i in indices if (out / f"iter_{i}" / "model" / "drift_train.json").is_file()]
    for i in with_model[:-limit]:
        d = out / f"iter_{i}"
        if (d / "model" / LINEAGE_FILE).is_file():
            continue
        shutil.copyfile(d / "model" / "drift_train.json", d / PRUNED_FILE)
        shutil.rmtree(d / "model")


def format_table(records: List[Dict[str, Any]]) -> str:
    """A plain-text ROUGE table, one row per evaluated stage."""
    lines = [f"{'stage':<8} {'method':<13} {'ROUGE-1':>7} {'ROUGE-2':>7} {'ROUGE-L':>7} {'gamma':>6} {'gen_s':>6} {'train_s':>7}"]
    for r in sorted(records, key=lambda r: r["iteration"]):
        method = r["method"] if r["stage"] != "base" else "-"
        if r.get("kind_of_stage") == "sft" and r["method"] != "sft":
            method = "sft (warm)"
        gamma = f"{r['gamma']:.3f}" if "gamma" in r else "-"
        gen = f"{r['generation_s']:.0f}" if "generation_s" in r else "-"
        tr = f"{r['train_s']:.0f}" if "train_s" in r else "-"
        r1, r2, rl = (f"{r[k]:>7.2f}" if k in r else f"{'-':>7}" for k in ("rouge1", "rouge2", "rougeL"))
        lines.append(f"{r['stage']:<8} {method:<13} {r1} {r2} {rl} {gamma:>6} {gen:>6} {tr:>7}")
    return "\n".join(lines)
