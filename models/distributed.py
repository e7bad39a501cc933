"""Data-parallel collectives for methods, on torch.distributed (the process group torchrun sets up).

Every rank holds a replica of the model and a disjoint shard of each global batch. A
method that computes a statistic from its local gradients or samples (SAM's ascent
direction, MASAM's per-encoder gradients and gamma, a moving score, a covariance ...)
must average that statistic over ranks BEFORE it decides anything with it, so that every
rank takes the same decision and applies the same update; the final parameter gradients
are averaged the same way right before the optimizer step (`Method.apply_gradients`).

Why not `DistributedDataParallel`'s own reducer: it all-reduces only inside `backward()`,
once per forward. The methods here take several backward passes per step and read
gradients with `torch.autograd.grad`, which bypasses the reducer, so averaging is explicit.
The collective, its backend and the launcher are PyTorch's (torchrun, NCCL or gloo).

Every function is a no-op in a single process (no process group), so a method written
with them runs unchanged on one CPU. Gradients are averaged as DDP averages them: the
mean over ranks of each rank's mean-over-local-batch gradient, which equals the
whole-batch gradient when the shards have equal size.

Means over PRESENT samples (a unimodal loss L_m over the samples where modality m is
present, and its gradient; a mean feature) follow the same rule: each rank takes its
own mean over its present samples and the ranks' means are averaged, exactly what
DDP does with such a loss. This equals the whole batch's mean when every shard has
the same number of samples with m present (always true with complete modalities);
otherwise each present sample of a rank with fewer of them weighs more. Making it
exact would need the global count before the backward (one more collective per step
in every method); it is done only where a statistic is not a mean over samples at
all and so would differ even with complete modalities (DrFuse's ranking loss,
normalised by the number of positive hinges), or where the sum and count travel in
a collective the method makes anyway (IGM's feature matrix, MLA's mean feature).

Epoch schedules (IGM's modality phases, MLA's alpha) count this rank's samples, so
they are identical on every rank only when the shards have the same size, which
`DistributedSampler` guarantees (it pads the last shard); `check_same_on_every_rank`
refuses otherwise rather than let ranks drift apart or wait on each other forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def _all_reduce_flat(tensors: Sequence[torch.Tensor], op, scale: float | None) -> None:
    # one collective for the whole list: flatten, reduce, copy back (per-tensor calls
    # would cost one round trip each)
    if not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=op)
    if scale is not None:
        flat.mul_(scale)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.detach().copy_(flat[offset:offset + n].view_as(t))
        offset += n


def all_reduce_mean_(tensors: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    """Average each tensor over ranks, in place (one collective; same dtype for all). Returns them.

    Use for per-rank means: gradients of mean losses, mean scores, mean features.
    """
    if is_distributed():
        _all_reduce_flat(tensors, dist.ReduceOp.SUM, 1.0 / dist.get_world_size())
    return tensors


def all_reduce_sum_(tensors: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    """Sum each tensor over ranks, in place (one collective). Returns them.

    Use for sums and counts accumulated over samples (so that ratios are exact even when
    the shards differ in size): divide after the reduction.
    """
    if is_distributed():
        _all_reduce_flat(tensors, dist.ReduceOp.SUM, None)
    return tensors


def min_max_over_ranks(value: int) -> tuple[int, int]:
    """(min, max) of an integer over ranks (one collective and one host sync; (value, value) in one process)."""
    if not is_distributed():
        return value, value
    t = torch.tensor([value, -value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, neg_low = t.tolist()
    return -neg_low, high


def check_same_on_every_rank(value: int, what: str) -> None:
    """ValueError naming `what` when `value` differs between ranks (e.g. a method's epoch size)."""
    low, high = min_max_over_ranks(value)
    if low != high:
        raise ValueError(f"{what} differs between data-parallel ranks (from {low} to {high}); "
                         "shard the data with DistributedSampler, which gives every rank the same number")


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average `p.grad` over ranks, in place, right before the optimizer step.

    A parameter with no gradient on one rank (e.g. an encoder whose modality is absent
    from that rank's shard) takes zeros for the reduction; it keeps `grad=None` only when
    no rank has a gradient for it, exactly as a single process with the whole batch would.
    """
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                       device=params[0].device)
    dist.all_reduce(has, op=dist.ReduceOp.SUM)
    anyone = has.gt(0).tolist()  # one host sync per step: which parameters take part
    live = []
    for p, used in zip(params, anyone, strict=True):
        if not used:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        live.append(p.grad)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in live:
        by_dtype.setdefault(g.dtype, []).append(g)
    for group in by_dtype.values():
        all_reduce_mean_(group)


def _broadcast_flat(tensors: Sequence[torch.Tensor], src: int) -> None:
    # rank `src`'s values everywhere, one collective per dtype (a ResNet-50 has 160 buffers:
    # one broadcast each per step would cost 160 round trips)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src=src)
        offset = 0
        for t in group:
            t.detach().copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of rank `src` to every rank, in place (start of training)."""
    if is_distributed():
        _broadcast_flat(list(module.parameters()) + list(module.buffers()), src)


def broadcast_buffers_(module: nn.Module, src: int = 0) -> None:
    """Copy buffers (BatchNorm running statistics, ...) of rank `src` to every rank, in place:
    what DDP's `broadcast_buffers` does, after each step."""
    if is_distributed():
        _broadcast_flat(list(module.buffers()), src)
