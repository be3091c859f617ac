"""How a fused vocabulary op (``oal``, ``token_logps``) is wired into PyTorch, written once.

Each op is a pair of ``torch.library`` custom ops, ``drift::<name>_forward`` returning
``(out, *aux)`` and ``drift::<name>_backward(grad_out, *saved) -> grad_logits``, with CPU and
CUDA kernels and an autograd formula: that is what ``torch.compile``, ``opcheck``, fake tensors
and other tracing see. Plain eager calls, the common case inside a training loop, take a
shorter road to the same kernels: one ``torch.autograd.Function`` that calls them directly.
The dispatcher's Python round trips for a custom op with a registered autograd formula cost
about 75 us per forward + backward on the CPU (measured with tiny tensors, 204 vs 130 us),
time the GPU spends idle between the kernels of a loss that itself takes well under a
millisecond. Both roads run the same kernels and save the same tensors.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence, Tuple

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from drift.ops._logits import acc_dtype


class FusedOp(NamedTuple):
    """A fused op's kernels and what its backward needs.

    ``forward(*inputs) -> (out, *aux)`` and ``backward(grad_out, *saved) -> grad_logits``
    pick the CPU or CUDA kernel by device; ``saved(inputs, outputs)`` returns the tensors the
    backward takes after ``grad_out``. ``inputs[0]`` is always the (B, T, V) logits, the only
    differentiable input; ``out`` is the only differentiable output.
    """

    name: str
    forward: Callable[..., Tuple[torch.Tensor, ...]]
    backward: Callable[..., torch.Tensor]
    saved: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], Tuple[torch.Tensor, ...]]
    op_forward: Callable[..., Tuple[torch.Tensor, ...]]  # torch.ops.drift.<name>_forward
    op_backward: Callable[..., torch.Tensor]  # torch.ops.drift.<name>_backward (differentiable)


def _grad_out(grad_out: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The upstream gradient as the backward kernels take it: contiguous, in the accumulator dtype."""
    return grad_out.to(acc_dtype(logits.dtype)).contiguous()


def _by_device(cpu: Callable, cuda: Callable) -> Callable:
    def call(first: torch.Tensor, *rest):
        return (cuda if first.device.type == "cuda" else cpu)(first, *rest)

    return call


def _checked(check: Callable, kernel: Callable) -> Callable:
    def call(*args):
        check(*args)
        return kernel(*args)

    return call


def define(name: str, forward_kernels: Tuple[Callable, Callable], backward_kernels: Tuple[Callable, Callable],
           checks: Tuple[Callable, Callable], saved: Callable) -> FusedOp:
    """Registers the (cpu, cuda) kernels of ``drift::<name>_forward`` / ``_backward`` (their
    schemas and fake kernels are declared by the caller) and the forward's autograd formula.

    ``checks``: (forward, backward) argument checks of a direct ``torch.ops.drift`` call, run
    before the registered kernels; the eager road skips them (the public function has checked
    its arguments already, and the native layer checks every view it receives).
    """
    for suffix, (cpu, cuda), check in (("forward", forward_kernels, checks[0]), ("backward", backward_kernels, checks[1])):
        torch.library.register_kernel(f"drift::{name}_{suffix}", "cpu", _checked(check, cpu))
        torch.library.register_kernel(f"drift::{name}_{suffix}", "cuda", _checked(check, cuda))
    op_backward = getattr(torch.ops.drift, f"{name}_backward")

    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(*saved(inputs, output))
        ctx.num_inputs = len(inputs)

    def backward(ctx, grad_out, *grad_aux):
        saved_tensors = ctx.saved_tensors
        grad = op_backward(_grad_out(grad_out, saved_tensors[0]), *saved_tensors)
        return (grad,) + (None,) * (ctx.num_inputs - 1)

    torch.library.register_autograd(f"drift::{name}_forward", backward, setup_context=setup_context)
    return FusedOp(name, _by_device(*forward_kernels), _by_device(*backward_kernels), saved,
                   getattr(torch.ops.drift, f"{name}_forward"), op_backward)


def define_double_backward(name: str, second_order: Callable, keep: Sequence[int]) -> None:
    """Registers the derivative of ``drift::<name>_backward``: ``second_order(grad_grad, *kept)``
    returns (d grad_out, d logits), ``kept`` being the backward's inputs at the ``keep``
    positions (grad_out and logits first); the other inputs get no gradient."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*(inputs[i] for i in keep))
        ctx.num_inputs = len(inputs)

    def backward(ctx, grad_grad):
        d_grad, d_logits = second_order(grad_grad, *ctx.saved_tensors)
        return (d_grad, d_logits) + (None,) * (ctx.num_inputs - 2)

    torch.library.register_autograd(f"drift::{name}_backward", backward, setup_context=setup_context)


class _Eager(torch.autograd.Function):
    """The eager road: the op's kernels called directly (a graph of the backward, when asked
    for, goes through the backward custom op and its derivative)."""

    @staticmethod
    def forward(ctx, op: FusedOp, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = op.forward(*inputs)
        ctx.op = op
        ctx.num_inputs = len(inputs)
        ctx.save_for_backward(*op.saved(inputs, outputs))
        return outputs[0]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        saved = ctx.saved_tensors
        # create_graph=True: the backward op, with its own derivative; else its kernel directly
        backward = ctx.op.op_backward if torch.is_grad_enabled() else ctx.op.backward
        grad = backward(_grad_out(grad_out, saved[0]), *saved)
        return (None, grad) + (None,) * (ctx.num_inputs - 1)


def _plain_eager(inputs: Sequence[torch.Tensor]) -> bool:
    """True when nothing traces, transforms or intercepts this call: plain tensors on CPU or
    CUDA, no torch.compile / export, no functorch transform, no dispatch or function mode."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    if torch._C._is_torch_function_mode_enabled() or _get_current_dispatch_mode() is not None:
        return False
    return all(type(t) is torch.Tensor and t.device.type in ("cpu", "cuda") for t in inputs)


def apply(op: FusedOp, *inputs: torch.Tensor) -> torch.Tensor:
    """``op``'s differentiable output for validated ``inputs`` (logits first)."""
    if _plain_eager(inputs):
        return _Eager.apply(op, *inputs)
    return op.op_forward(*inputs)[0]
