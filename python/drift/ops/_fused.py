"""How a fused vocabulary op (``oal``, ``token_logps``) is wired into PyTorch, written once.

Each op is a pair of ``torch.library`` custom ops, ``drift::<name>_forward`` returning
``(out, *aux)`` and ``drift::<name>_backward(grad_out, *saved) -> grad_logits``, with fake
(meta) kernels, one kernel for CPU and CUDA (the native entries ``drift._C.<name>_forward`` /
``_backward`` run on the tensors' device) and an autograd formula: that is what
``torch.compile``, ``opcheck``, fake tensors and other tracing see. Plain eager calls, the common case inside a training loop, take a
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

from drift import _native
from drift._native import _C
from drift.ops._logits import acc_dtype, require_cuda_kernels, unit_stride_rows


class FusedOp(NamedTuple):
    """A fused op's kernels and what its backward needs.

    ``forward(*inputs) -> (out, *aux)`` and ``backward(grad_out, *saved) -> grad_logits``
    run the native kernels on the inputs' device (CPU or CUDA); ``saved(inputs, outputs)`` returns the tensors the
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


def _run_native(entry: Callable, logits: torch.Tensor, *tensors: torch.Tensor) -> None:
    """Calls a ``drift._C`` vocabulary entry on ``tensors`` (DLPack capsules); on CUDA it runs on
    the current stream of ``logits``' device."""
    stream = 0
    if logits.device.type == "cuda":
        require_cuda_kernels("logits")
        stream = _native.cuda_stream(logits.device)
    entry(*(_native.capsule(t) for t in tensors), stream)


def _forward_kernel(entry: Callable, empty_outputs: Callable) -> Callable:
    """The forward kernel: ``empty_outputs(logits, *inputs)`` allocates the outputs, ``entry`` fills them."""

    def forward(logits: torch.Tensor, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        logits = unit_stride_rows(logits)
        outputs = empty_outputs(logits, *inputs)
        _run_native(entry, logits, logits, *inputs, *outputs)
        return outputs

    return forward


def _backward_kernel(entry: Callable) -> Callable:
    """The backward kernel: allocates ``d logits`` (logits' shape and dtype), ``entry`` fills it."""

    def backward(grad_out: torch.Tensor, logits: torch.Tensor, *saved: torch.Tensor) -> torch.Tensor:
        logits = unit_stride_rows(logits)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        _run_native(entry, logits, grad_out, logits, *saved, grad)
        return grad

    return backward


def _checked(check: Callable, kernel: Callable) -> Callable:
    def call(*args):
        check(*args)
        return kernel(*args)

    return call


def define(name: str, schemas: Tuple[str, str], checks: Tuple[Callable, Callable], empty_outputs: Callable,
           saved: Callable) -> FusedOp:
    """Defines ``drift::<name>_forward`` / ``_backward`` with the (forward, backward) ``schemas``:
    their fake kernels, their CPU and CUDA kernel (``drift._C.<name>_forward`` / ``_backward``)
    and the forward's autograd formula.

    ``checks``: (forward, backward) argument checks of a direct ``torch.ops.drift`` call, run by
    the fake kernels and before the registered kernels; the eager road skips them (the public
    function has checked its arguments already, and the native layer checks every view it
    receives). ``empty_outputs(logits, *inputs)``: the forward's outputs, allocated (the
    backward's is always an empty tensor like the logits). ``saved(inputs, outputs)``: the
    tensors the backward takes after ``grad_out``.
    """
    kernels = (_forward_kernel(getattr(_C, f"{name}_forward"), empty_outputs),
               _backward_kernel(getattr(_C, f"{name}_backward")))
    fakes = (empty_outputs, lambda grad_out, logits, *saved_tensors: logits.new_empty(logits.shape))
    for suffix, schema, check, kernel, fake in zip(("forward", "backward"), schemas, checks, kernels, fakes):
        op = f"drift::{name}_{suffix}"
        torch.library.define(op, schema)
        torch.library.register_fake(op)(_checked(check, fake))
        for device in ("cpu", "cuda"):
            torch.library.register_kernel(op, device, _checked(check, kernel))
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
    return FusedOp(name, kernels[0], kernels[1], saved, getattr(torch.ops.drift, f"{name}_forward"), op_backward)


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
