"""Generation: greedy or sampled responses of the current model, batched and sharded by batch.

The transformers road (left-padded batches, one ``generate`` call each, batches dealt to
processes round-robin and gathered back in order) or, experimental, vLLM (each process generates
its share of the prompts from the saved policy folder; checked only against a stub of vLLM's API,
never against vLLM itself); and opponent answers given as a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from drift import atomic
from drift.trainer.batching import collate
from drift.trainer.examples import Example
from drift.trainer.run import Run


def generate(run: Run, model, prompts: List[List[int]], *, sample: bool, seed: int, desc: str,
             batch_size: Optional[int] = None) -> List[List[int]]:
    """Responses (ids, cut after the first EOS) for ``prompts``, batched, left-padded, sharded by batch.

    ``batch_size`` prompts per generate() call (default ``generation_batch_size``; evaluation
    passes ``per_device_eval_batch_size``).
    """
    if run.config.generation_backend == "vllm":
        return gather_ordered(run.accelerator, vllm_results(run, prompts, sample=sample, seed=seed), len(prompts))
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
        atomic.fault_point(f"{desc}:batch{start // bs + 1}")
    model.train(was_training)
    return gather_ordered(acc, results, len(prompts))


def answer_record(ids: List[int], tokenizer) -> Dict[str, Any]:
    """The fields ``drift generate`` writes for one answer (token ids as :func:`generate` returns them).

    ``generation``: the text (special tokens, EOS among them, left out; stripped); ``ended``:
    whether the answer stopped with EOS (False: cut at ``max_new_tokens``); ``generation_ids``:
    its token ids without that EOS, so :func:`provided_generations` gets back exactly ``ids``
    (re-tokenizing the text need not: a model's tokens are not always the tokenizer's split of
    their text, and special tokens are not in the text).
    """
    if not isinstance(ids, (list, tuple)) or not all(isinstance(t, int) for t in ids):
        raise TypeError(f"ids: expected a list of int token ids, got {type(ids).__name__}")
    ended = bool(ids) and ids[-1] == tokenizer.eos_token_id
    return {"generation": tokenizer.decode(ids, skip_special_tokens=True).strip(), "ended": ended,
            "generation_ids": list(ids[:-1] if ended else ids)}


def provided_generations(path: Path, pairs: List[Example], tokenizer) -> List[List[int]]:
    """Token ids of the opponent answers in ``path``, a JSONL of ``prompt`` / ``generation`` records
    (what ``drift generate --split train`` writes), matched to the training pairs by prompt text.

    A record's ids are its ``generation_ids`` where given (they must decode to its ``generation``),
    else its text tokenized; EOS is appended unless ``"ended": false`` (an answer cut at
    ``max_new_tokens``). Without ``ended`` every answer is taken as finished, as for answers of
    another model written as text. So drift's own answers, written by ``drift generate``, come
    back as the very ids it generated.
    """
    by_prompt: Dict[str, List[int]] = {}
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
        by_prompt[rec["prompt"].strip()] = _answer_ids(rec, tokenizer, f"opponent_generations: {path}, line {i}")
    missing = [p.prompt_text for p in pairs if p.prompt_text not in by_prompt]
    if missing:
        raise ValueError(f"opponent_generations: {path} has no generation for {len(missing)} of {len(pairs)} "
                         f"training prompts (first: {missing[0][:60]!r})")
    return [list(by_prompt[p.prompt_text]) for p in pairs]


def _answer_ids(rec: Dict[str, Any], tokenizer, where: str) -> List[int]:
    """One record's answer as token ids (+ EOS unless ``ended`` is false); ValueError naming ``where``."""
    eos, text = tokenizer.eos_token_id, rec["generation"].strip()
    ended = rec.get("ended", True)
    if not isinstance(ended, bool):
        raise ValueError(f"{where}: 'ended' must be true or false, got {ended!r}")
    ids = rec.get("generation_ids")
    if ids is None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        n = len(tokenizer)
        if not (isinstance(ids, list) and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n
                                              for t in ids)):
            raise ValueError(f"{where}: 'generation_ids' must be a list of token ids in [0, {n})")
        if eos in ids:
            raise ValueError(f"{where}: 'generation_ids' holds EOS (id {eos}); leave it out and say \"ended\": true")
        if tokenizer.decode(ids, skip_special_tokens=True).strip() != text:
            raise ValueError(f"{where}: 'generation_ids' do not decode to 'generation' (text edited, or ids of another "
                             "tokenizer); drop 'generation_ids' to train on the text")
    return list(ids) + ([eos] if ended else [])


def _cut_at_eos(ids: List[int], eos: int) -> List[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


#: The share of GPU memory vLLM may take: the policy being trained shares the GPU.
VLLM_MEMORY_FRACTION = 0.3


def vllm_results(run: Run, prompts: List[List[int]], *, sample: bool, seed: int) -> List[tuple]:
    """``(index, ids cut after EOS)`` for this process's share of ``prompts`` (every ``num_processes``-th from
    ``process_index``), generated by vLLM from the saved policy folder (experimental: tested against a stub)."""
    from vllm import LLM, SamplingParams  # only reachable when validate() found vllm

    cfg, acc = run.config, run.accelerator
    mine = list(range(len(prompts)))[acc.process_index:: acc.num_processes]
    if not mine:
        return []
    llm = LLM(model=str(run.policy.path), dtype=run.precision.vllm_dtype, seed=seed,
              gpu_memory_utilization=VLLM_MEMORY_FRACTION)
    params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature if sample else 0.0,
                            top_p=cfg.top_p if sample else 1.0, seed=seed)
    outs = llm.generate([{"prompt_token_ids": prompts[i]} for i in mine], params)  # vLLM keeps the input order
    del llm
    if len(outs) != len(mine):
        raise RuntimeError(f"generation_backend vllm: {len(outs)} outputs for {len(mine)} prompts")
    return [(i, _cut_at_eos(list(o.outputs[0].token_ids), run.tokenizer.eos_token_id)) for i, o in zip(mine, outs)]


def gather_ordered(acc, results: List[tuple], n: int) -> List[Any]:
    """The ``(index, value)`` pairs of every process, as one list of ``n`` values by index."""
    from accelerate.utils import gather_object

    if acc.num_processes > 1:
        results = gather_object(results)
    ordered: List[Any] = [None] * n
    for i, value in results:
        ordered[i] = value
    return ordered

