"""LoRA stages on disk: one adapter per stage that PEFT's own loader turns into the model drift trained.

Iteration k trains a fresh LoRA adapter on the model of iteration k-1, which is the base with
the adapters of iterations 1..k-1 merged in. Since every adapter adapts the same linear layers,
``W_k = W_0 + s (B_1 A_1 + ... + B_k A_k) = W_0 + s [B_1 ... B_k] [A_1; ...; A_k]``: the stage's
``adapter_model.safetensors`` holds that *stacked* adapter (rank ``r_1 + ... + r_k``, alpha
``alpha_1 + ... + alpha_k``, so the scaling ``alpha / r`` is unchanged) against the original base
model (resolved path), which ``AutoPeftModelForCausalLM`` / ``PeftModel.from_pretrained`` load as
it is. ``drift_lora_lineage.json`` names the base and the pieces (``{"r", "lora_alpha"}`` per
stage, in order); :func:`load_lineage` merges them one by one onto the base, exactly as training
did, so drift rebuilds the very weights the next stage started from.

Run folders written before stacking hold each stage's own adapter and a lineage of relative
``adapters`` folders to merge in order; they are still read (and extended) here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from drift import atomic
from drift.trainer.layout import LINEAGE_FILE

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# rows of A / columns of B are a LoRA adapter's rank dimension (embedding adapters likewise)
_RANK_DIM = {"lora_A": 0, "lora_embedding_A": 0, "lora_B": 1, "lora_embedding_B": 1}

Piece = Tuple[Dict[str, Any], Dict[str, torch.Tensor]]  # ({"r", "lora_alpha"}, the adapter's tensors)


def resolved_base(path: str | Path) -> str:
    """``path`` as an absolute path when it is a folder here; else as given (a hub name)."""
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else str(path)


def _rank_dim(key: str) -> int:
    for part in reversed(key.split(".")):
        if part in _RANK_DIM:
            return _RANK_DIM[part]
    raise ValueError(f"LoRA adapter: tensor {key!r} is not a LoRA A/B matrix; drift stacks plain LoRA adapters only")


def _read_adapter(folder: Path) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return atomic.read_json(folder / ADAPTER_CONFIG), load_file(str(folder / ADAPTER_WEIGHTS))


def pieces(folder: str | Path) -> Tuple[str, List[Piece]]:
    """``(base model, pieces)`` of the model saved in ``folder``: the adapters to merge onto the base, in order.

    A folder without a lineage is a full model: ``(its resolved path, [])``. Each piece is
    ``({"r", "lora_alpha"}, tensors)`` with the tensors keyed as in ``adapter_model.safetensors``.
    """
    folder = Path(folder)
    if not (folder / LINEAGE_FILE).is_file():
        return resolved_base(folder), []
    lineage = atomic.read_json(folder / LINEAGE_FILE)
    if "adapters" in lineage:  # a folder written before stacking: one own adapter per folder of the chain
        out = []
        for rel in lineage["adapters"]:
            cfg, tensors = _read_adapter((folder / rel).resolve())
            out.append(({"r": int(cfg["r"]), "lora_alpha": cfg["lora_alpha"]}, tensors))
        return lineage["base_model"], out
    _, stacked = _read_adapter(folder)
    out, start = [], 0
    for info in lineage["pieces"]:
        r = int(info["r"])
        part = {k: v.narrow(_rank_dim(k), start, r).contiguous() for k, v in stacked.items()}
        out.append(({"r": r, "lora_alpha": info["lora_alpha"]}, part))
        start += r
    return lineage["base_model"], out


def write_stacked(folder: Path, parent: str | Path) -> Dict[str, Any]:
    """Turn the own adapter PEFT saved in ``folder`` into the stacked adapter of the whole lineage.

    ``parent``: the model this stage's training started from. Rewrites ``adapter_model.safetensors``
    (the parent's pieces, then this stage's) and ``adapter_config.json`` (summed ``r`` and
    ``lora_alpha``; ``base_model_name_or_path`` the resolved base); returns the lineage to store.
    Raises ValueError when the pieces cannot be stacked exactly (different ``lora_alpha / r``,
    rank or alpha patterns, rsLoRA or DoRA, or tensors other than LoRA A/B matrices).
    """
    from safetensors.torch import save_file

    base, chain = pieces(parent)
    cfg, own = _read_adapter(folder)
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("use_rslora") or cfg.get("use_dora"):
        raise ValueError("use_peft: drift stacks plain LoRA adapters only (no rank/alpha patterns, rsLoRA or DoRA)")
    chain = chain + [({"r": int(cfg["r"]), "lora_alpha": cfg["lora_alpha"]}, own)]
    r0, a0 = chain[0][0]["r"], chain[0][0]["lora_alpha"]
    if any(info["lora_alpha"] * r0 != a0 * info["r"] for info, _ in chain):
        raise ValueError("use_peft: the stages' adapters scale differently (lora_alpha / lora_r); they cannot be "
                         "stacked into one adapter")
    if any(t.keys() != own.keys() for _, t in chain):
        raise ValueError("use_peft: the stages' adapters adapt different modules (lora_target_modules); they cannot "
                         "be stacked into one adapter")
    stacked = {k: torch.cat([t[k] for _, t in chain], dim=_rank_dim(k)).contiguous() for k in own}
    save_file(stacked, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    cfg.update(r=sum(info["r"] for info, _ in chain), lora_alpha=sum(info["lora_alpha"] for info, _ in chain),
               base_model_name_or_path=base)
    atomic.write_json(folder / ADAPTER_CONFIG, cfg)
    _name_base_in_card(folder / "README.md", base)
    return {"base_model": base, "pieces": [info for info, _ in chain]}


def _name_base_in_card(card: Path, base: str) -> None:
    """Name ``base`` in the metadata of the model card PEFT wrote (it names the path as given)."""
    if not card.is_file():
        return
    lines = card.read_text(encoding="utf-8").split("\n")
    if not lines or lines[0] != "---" or "---" not in lines[1:]:
        return
    for i in range(1, lines.index("---", 1)):
        if lines[i].startswith("base_model: "):
            lines[i] = f"base_model: {base}"
        elif lines[i].startswith("- base_model:adapter:"):
            lines[i] = f"- base_model:adapter:{base}"
    card.write_text("\n".join(lines), encoding="utf-8")


def load_lineage(folder: str | Path, dtype: torch.dtype):
    """The model saved adapter-only in ``folder``: its base (in ``dtype``) with every piece merged, in order.

    Each merge is PEFT's own (``merge_and_unload``) of that stage's adapter, as at the end of the
    stage's training, so the weights equal those the next stage trained on bit for bit.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    base, chain = pieces(folder)
    cfg = atomic.read_json(folder / ADAPTER_CONFIG)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    known = set(LoraConfig.__dataclass_fields__) - {"peft_type", "base_model_name_or_path"}
    for info, tensors in chain:
        lcfg = LoraConfig(**{k: v for k, v in {**cfg, **info}.items() if k in known})
        lcfg.inference_mode = True
        model = get_peft_model(model, lcfg)
        set_peft_model_state_dict(model, tensors)
        model = model.merge_and_unload()
    return model

