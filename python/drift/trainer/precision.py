"""Mixed precision as in transformers' ``--bf16`` / ``--fp16``: float32 master weights, autocast compute.

The weights and the optimizer state stay in ``config.dtype`` (float32 unless asked otherwise);
every forward pass - training, the opponent's generation, the reference log-probs, evaluation -
runs under ``torch.autocast`` on the accelerator's device type (CPU included), so matmuls run in
bf16/fp16 while the AdamW update is applied to the float32 copy. The fused ops
(:func:`drift.token_logps`, :func:`drift.oal_loss`) read bf16/fp16 logits and accumulate in
float32. ``fp16`` adds dynamic loss scaling (``torch.amp.GradScaler``).

Everything here is decided from the config and a device *type*, so the CUDA path is testable on
a CPU-only machine (:func:`resolve_precision` takes the device and the bf16 support check).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional

import torch

#: device types torch.autocast accepts
AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


@dataclass(frozen=True)
class Precision:
    """How one run computes: ``mode`` 'no' / 'bf16' / 'fp16' on ``device_type``.

    ``load_dtype``: the dtype the weights are loaded, updated and saved in (the master copy);
    ``compute_dtype``: the autocast dtype, None without mixed precision.
    """

    mode: str
    device_type: str
    load_dtype: torch.dtype
    compute_dtype: Optional[torch.dtype]

    def autocast(self) -> ContextManager[Any]:
        """``torch.autocast`` for this run's device and compute dtype (a no-op context without mixed precision)."""
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.compute_dtype)

    def grad_scaler(self) -> Optional["torch.amp.GradScaler"]:
        """A dynamic loss scaler for fp16 (None otherwise: bf16 has float32's exponent range)."""
        if self.mode != "fp16":
            return None
        return torch.amp.GradScaler(self.device_type)

    @property
    def vllm_dtype(self) -> str:
        """The dtype name vLLM should generate in."""
        return {"bf16": "bfloat16", "fp16": "float16"}.get(self.mode, str(self.load_dtype).replace("torch.", ""))


def _cuda_bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(config: Any, device: torch.device | str,
                      bf16_supported: Optional[Callable[[], bool]] = None) -> Precision:
    """The :class:`Precision` of ``config`` (its ``bf16``, ``fp16``, ``dtype``) on ``device``.

    ``bf16_supported`` answers whether a CUDA device computes in bf16 (default:
    ``torch.cuda.is_bf16_supported``). Raises ValueError naming the field for combinations
    that cannot run: both flags, a flag with non-float32 master weights, bf16 on a CUDA
    device without bf16, or a device type autocast does not know.
    """
    device_type = torch.device(device).type
    load_dtype = getattr(torch, config.dtype)
    bf16, fp16 = bool(getattr(config, "bf16", False)), bool(getattr(config, "fp16", False))
    if bf16 and fp16:
        raise ValueError("bf16: bf16 and fp16 are both set; choose one mixed-precision mode")
    if not (bf16 or fp16):
        return Precision("no", device_type, load_dtype, None)
    flag = "bf16" if bf16 else "fp16"
    if load_dtype != torch.float32:
        raise ValueError(f"{flag}: mixed precision keeps float32 master weights, but dtype is {config.dtype}; "
                         "leave dtype at float32 (dtype sets the stored weights, not the compute)")
    if device_type not in AUTOCAST_DEVICES:
        raise ValueError(f"{flag}: torch.autocast does not support device type {device_type!r}")
    if bf16 and device_type == "cuda" and not (bf16_supported or _cuda_bf16_supported)():
        raise ValueError("bf16: this CUDA device has no bfloat16 support; use fp16: true instead")
    return Precision(flag, device_type, load_dtype, torch.bfloat16 if bf16 else torch.float16)


def check_accelerator(accelerator: Any, precision: Precision) -> None:
    """Refuse an accelerate launch whose ``--mixed_precision`` disagrees with the config.

    drift decides precision from its config (as transformers does from TrainingArguments);
    a launcher setting it differently would train the policy in one precision and compute the
    reference log-probs in another.
    """
    launched = getattr(accelerator, "mixed_precision", "no") or "no"
    if launched not in ("no", precision.mode):
        want = "bf16: true" if launched == "bf16" else "fp16: true" if launched == "fp16" else "no mixed precision"
        raise ValueError(f"bf16: accelerate was launched with mixed_precision={launched!r} but the config asks for "
                         f"{precision.mode!r}; set {want} in the config or launch with --mixed_precision "
                         f"{precision.mode}")
