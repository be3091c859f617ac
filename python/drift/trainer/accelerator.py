"""The accelerator a run works through: CPU, one GPU, or ``accelerate launch`` (DDP, FSDP, DeepSpeed)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch

from drift.trainer.config import DriftConfig
from drift.trainer.precision import check_accelerator, resolve_precision


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
