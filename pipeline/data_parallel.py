"""What the trainer shares between the ranks of a data-parallel run (no-ops in one process).

Methods average their own statistics and gradients (`models.distributed`); the trainer
only has to agree on what it logs and decides: the metrics of the global batch, the
validation predictions of the whole split (each rank predicts a contiguous part; the parts
are gathered in row order), and rank 0's copy of anything every rank must act on alike.
Python objects travel with `all_gather_object` / `broadcast_object_list` (small: metric
dicts, a validation split's probabilities), never per optimizer step except at log steps.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from clinfuse.models.distributed import is_distributed, rank, world_size

from .data import SplitTensors, shard_bounds
from .inference import predict_tensors

T = TypeVar("T")


def is_main() -> bool:
    """Rank 0 (the only process in a single-process run): the one that writes files and logs."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def from_rank0(obj: T) -> T:
    """Rank 0's `obj` on every rank (so every rank takes rank 0's decision)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order ([obj] in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """Mean of each key over every rank's (sum, count): the global batch's metric when shards are equal.

    A key a rank did not report (a metric some steps only have) counts on the ranks that did.
    """
    total: dict[str, float] = {}
    n: dict[str, int] = {}
    for rank_sums, rank_counts in gathered((sums, counts)):
        for k, v in rank_sums.items():
            total[k] = total.get(k, 0.0) + v
            n[k] = n.get(k, 0) + rank_counts[k]
    return {k: total[k] / n[k] for k in total}


def first_bad_step(local: int) -> int:
    """The first optimizer step with a non-finite loss on any rank (-1 if none), identical on every rank."""
    bad = [b for b in gathered(local) if b >= 0]
    return min(bad) if bad else -1


def predict_split_parallel(model, tensors: SplitTensors, task_type: str, head: str, batch_size: int,
                           bf16: bool) -> np.ndarray:
    """Probabilities `[N, K]` of the whole split in row order; each rank predicts 1/W of the rows."""
    if not is_distributed():
        return predict_tensors(model, tensors, task_type, head, batch_size, bf16)
    part = predict_tensors(model, tensors.shard(rank(), world_size()), task_type, head, batch_size, bf16)
    return np.concatenate(gathered(part), axis=0)



class RankSplit:
    """The training split as a method's epoch hook sees it on rank `rank` of `world`.

    Everything of the whole split (`len`, `rows`, `inputs`, `present`, `y`, `groups`,
    `batch(index)`: every rank holds all of it), except that `.batches(batch_size, generator)`
    yields this rank's contiguous part of each global batch, so that a pass over the split
    split over the ranks, with its sums and counts added over ranks, is the one-process pass.
    The parts differ in size by at most one (never padded: sums stay exact); an empty part
    is skipped. `rank_samples` is the number of samples this rank trains on per epoch (the
    trainer's padded shares of the global batches of `batch_size`).
    """

    def __init__(self, split: SplitTensors, batch_size: int, rank: int, world: int):
        self.split, self.rank, self.world = split, rank, world
        n = len(split)
        last = n % batch_size or batch_size
        self.rank_samples = (n - last) // world + -(-last // world) if n else 0

    def __getattr__(self, name: str):
        return getattr(self.split, name)

    def __len__(self) -> int:
        return len(self.split)

    def batches(self, batch_size: int, generator=None):
        n = len(self.split)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]  # the one-process batch (host positions)
            bounds = shard_bounds(len(index), self.world)
            part = index[bounds[self.rank] : bounds[self.rank + 1]]
            if len(part):
                yield self.split.batch(part.to(self.split.y.device), part)
