"""BatchNorm over the global batch of a data-parallel run (`train.sync_batchnorm`).

Each process sees batch_size / W samples; plain BatchNorm normalises with its own shard's
statistics. Synchronised BatchNorm reduces per-channel sums over the processes so that every
process normalises with the statistics of the whole global batch, exactly as one process
would. On CUDA this is PyTorch's `nn.SyncBatchNorm`. PyTorch's version refuses CPU tensors,
so on CPU (gloo) `SumSyncBatchNorm` does the same with one differentiable all-reduce of
(sum, sum of squares, count) per layer and pass (`_AllReduceSum`, whose backward all-reduces
the incoming gradient: the ranks' gradients then average to the gradient of the
global-batch loss).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x; dL/dx = sum over ranks of dL_r/dy (each rank's loss depends on y)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SumSyncBatchNorm(_BatchNorm):
    """BatchNorm1d/2d/3d whose training-mode statistics are those of the global batch.

    Input `[B, C, *]`. Outside a process group (or in eval mode) it is plain BatchNorm.
    Statistics: mean = S / N, var = SS / N - mean^2 over the N samples x positions of all
    ranks; the running variance uses the unbiased N / (N - 1), as `nn.BatchNorm` does.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        local = torch.tensor(input.numel() // input.shape[1], dtype=input.dtype, device=input.device)
        stats = torch.cat([input.sum(dims), (input * input).sum(dims), local.reshape(1)])
        stats = _AllReduceSum.apply(stats)
        c = input.shape[1]
        count = stats[2 * c]
        mean = stats[:c] / count
        var = (stats[c : 2 * c] / count - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = float(count)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1.0)), alpha=factor)
        shape = [1, c] + [1] * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every BatchNorm layer synchronised over ranks (same parameters, buffers and state_dict keys).

    `nn.SyncBatchNorm` on CUDA, `SumSyncBatchNorm` elsewhere.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, SumSyncBatchNorm):
        new = SumSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new.to(next(iter(module.buffers()), torch.empty(0)).device)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, device)
        if converted is not child:
            setattr(module, name, converted)
    return module
