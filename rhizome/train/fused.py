"""Fused kernels for LoRA training on a CPU: the LoRA linear layer and the LM head's cross-entropy.

PEFT's LoRA layer runs ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as separate ops: a dropout
(random mask, multiply, divide), two small matmuls, a scale, an add over the output, and under bf16
autocast a cast of every frozen weight and of every activation on the way in and out. On a 2-core CPU
those passes over [tokens x width] tensors cost more than the base matmul itself (bench/train.py
--profile). ``LoraLinear`` computes the same function in the base weights' dtype with one addmm
accumulating the adapter into the base output, a 0/1 dropout mask (the 1 / (1 - p) folded into the
rank-r factor) and hand-written gradients; the adapter's parameters and their gradients stay fp32.

``linear_cross_entropy`` is the summed cross-entropy of ``hidden @ weight.T`` over labelled positions,
computed in chunks: no [positions x vocabulary] fp32 logits are kept, and since the loss is a scalar,
its gradient with respect to ``hidden`` is computed in the same pass (softmax minus one-hot, times the
head) and only scaled in backward.
"""

from __future__ import annotations

import types

import torch
from torch import nn

LOSS_CHUNK = 512  # positions per chunk: 512 x 49,152 fp32 logits = 100 MB


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, keep: torch.Tensor | None, keep_prob: float):
        flat = x.reshape(-1, x.shape[-1])
        # Dropout on the adapter's input: x * keep / keep_prob; the division is folded into A.
        a = (lora_a * (1.0 / keep_prob)).to(x.dtype)
        b = (lora_b * scaling).to(x.dtype)
        h = (flat * keep if keep is not None else flat) @ a.t()
        out = torch.nn.functional.linear(flat, weight, bias)
        out.addmm_(h, b.t())
        # The input, not the dropped-out input: q, k and v (and gate and up) share one input tensor, so it is
        # kept once; the 1-byte mask is reapplied in backward.
        ctx.save_for_backward(weight, a, b, flat, keep, h)
        ctx.scaling, ctx.keep_prob = scaling, keep_prob
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        weight, a, b, flat, keep, h = ctx.saved_tensors
        grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_h = grad @ b  # [tokens, r]
        grad_x = None
        if ctx.needs_input_grad[0]:
            if keep is None:
                grad_x = torch.addmm(grad @ weight, grad_h, a)
            else:
                grad_x = (grad @ weight).add_((grad_h @ a).mul_(keep))
            grad_x = grad_x.reshape(*grad_out.shape[:-1], weight.shape[1])
        grad_a = None
        if ctx.needs_input_grad[3]:
            grad_a = (grad_h.t() @ (flat * keep if keep is not None else flat)).float().mul_(1.0 / ctx.keep_prob)
        grad_b = (grad.t() @ h).float().mul_(ctx.scaling) if ctx.needs_input_grad[4] else None
        return grad_x, None, None, grad_a, grad_b, None, None, None


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    adapter = self.active_adapters[0]
    if (args or kwargs or self.merged or self.disable_adapters or len(self.active_adapters) != 1
            or adapter not in self.lora_A or adapter in self.lora_variant):
        return self._peft_forward(x, *args, **kwargs)
    base = self.base_layer
    dropout = self.lora_dropout[adapter]
    p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
    x = x.to(base.weight.dtype)
    keep = None
    if p > 0:
        keep = torch.empty(x.shape[:-1].numel(), x.shape[-1], dtype=torch.bool, device=x.device).bernoulli_(1.0 - p)
    return _LoraLinear.apply(x, base.weight, base.bias, self.lora_A[adapter].weight, self.lora_B[adapter].weight,
                             float(self.scaling[adapter]), keep, 1.0 - p)


def fuse_lora(model: nn.Module) -> int:
    """Route every PEFT LoRA layer over a plain ``nn.Linear`` through ``_LoraLinear``; returns how many.

    The PEFT modules and parameters stay as they are (saving, loading and merging are unchanged);
    anything the fused path does not cover (merged or disabled adapters, several adapters, DoRA and
    other variants, 4-bit base layers) still takes PEFT's own forward.
    """
    from peft.tuners.lora import Linear as LoraLinearLayer

    fused = 0
    for module in model.modules():
        if isinstance(module, LoraLinearLayer) and type(module.base_layer) is nn.Linear:
            module._peft_forward = module.forward
            module.forward = types.MethodType(_fused_forward, module)
            fused += 1
    return fused


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, with_grad: bool):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if with_grad else None
        for start in range(0, hidden.shape[0], LOSS_CHUNK):
            end = min(start + LOSS_CHUNK, hidden.shape[0])
            target = labels[start:end, None]
            logits = (hidden[start:end] @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            total += (lse - logits.gather(1, target)).sum()
            if with_grad:  # d(sum of -log softmax at target) / d logits = softmax - one-hot
                probs = logits.sub_(lse).exp_()
                probs.scatter_add_(1, target, torch.full_like(target, -1.0, dtype=probs.dtype))
                grad[start:end] = probs.to(hidden.dtype) @ weight
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over rows of cross_entropy(hidden @ weight.T, labels) for a frozen ``weight`` (the LM head)."""
    if weight.requires_grad:  # a trained head needs its own gradient: the plain path
        logits = hidden @ weight.t()
        return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
    return _LinearCrossEntropy.apply(hidden, weight.to(hidden.dtype), labels,
                                     torch.is_grad_enabled() and hidden.requires_grad)
