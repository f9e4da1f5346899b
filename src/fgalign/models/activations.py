"""The tanh-approximate GELU of GPT-2, computed through a sigmoid: the same function, faster on the CPU.

    gelu_tanh(x) = ½·x·(1 + tanh(u)) = x·σ(2u),   u = √(2/π)·(x + 0.044715·x³)

Why: on the project's CPUs (AMD EPYC, AVX2) torch's tanh kernel runs at ~4.5 ns per float where sigmoid runs
at ~1.2, so `F.gelu(approximate="tanh")` (one kernel, but built on tanh) is slower than five cheap in-place
passes and a sigmoid. Measured on (640, 512) floats, 1 thread: forward 0.7 ms against 1.4 ms (gelu_new,
GPT-2's own 7-op version: 3.5 ms); forward + backward 2.2-2.7 ms against 2.9. Values agree with
`F.gelu(approximate="tanh")` to 5e-7 and gradients to 1.5e-6 relative (float rounding); gradcheck passes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

_C = 2.0 * math.sqrt(2.0 / math.pi)  # 2u = _C·(x + A·x³)
_A = 0.044715


class _SigmoidGELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        s = x * x
        s.mul_(_A * _C).add_(_C).mul_(x).sigmoid_()  # σ(2u), in place: one allocation
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, s = ctx.saved_tensors
        # d/dx x·σ(2u) = σ + x·σ·(1 − σ)·(2u)',  (2u)' = _C·(1 + 3A·x²)
        d = x * x
        d.mul_(3.0 * _A * _C).add_(_C).mul_(x).mul_(s).mul_(1.0 - s).add_(s).mul_(grad)
        return d


def gelu_tanh(x: Tensor) -> Tensor:
    """GPT-2's GELU (tanh approximation), elementwise, any shape.

    The sigmoid form on CPU float32/float64 only: on a GPU `F.gelu` is one fused kernel (six passes would be
    slower), and in float16 x² overflows for |x| > 256, which would turn the backward's inf·0 into NaN.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return torch.nn.functional.gelu(x, approximate="tanh")
    if torch.is_grad_enabled() and x.requires_grad:
        return _SigmoidGELU.apply(x)
    s = x * x
    return s.mul_(_A * _C).add_(_C).mul_(x).sigmoid_().mul_(x)


class GELUTanhSigmoid(torch.nn.Module):
    """`gelu_tanh` as a module, to stand in for transformers' `gelu_new` / `gelu_pytorch_tanh` modules."""

    def forward(self, x: Tensor) -> Tensor:
        return gelu_tanh(x)


def fuse_gelu(model: torch.nn.Module) -> torch.nn.Module:
    """Swap GPT-2-style tanh-GELU modules for `GELUTanhSigmoid`, in place; returns the model.

    Profiled on a PPO iteration of the 2-layer 128-d benchmark policy, GPT-2's `gelu_new` (7 tensor ops and
    their backward) took a fifth of the CPU time. The saved config is untouched, so a saved model loads
    anywhere as before. Other activations (Llama's SiLU, BERT's erf GELU) are left alone.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, (NewGELUActivation, GELUTanh)):
                setattr(parent, name, GELUTanhSigmoid())
    return model
