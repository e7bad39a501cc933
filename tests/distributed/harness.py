"""Run a method's steps in W gloo processes, each given its shard of every batch, and in one process.

The data-parallel contract: W processes that each see 1/W of every global batch end, after
several steps, with the same parameters as one process that sees the whole batch. The
model is float64 and has no dropout or BatchNorm, so the only differences are the order
of floating-point sums (tolerance 1e-9).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from clinfuse.models.methods import METHODS

MODALITIES = ("ehr", "cxr")
IN_FEATURES = {"ehr": 5, "cxr": 4}
HIDDEN = 3


@dataclass(frozen=True)
class Case:
    """One method configuration to check.

    Args:
        method: `METHODS` key.
        options: the method's keyword options.
        task_type: "multilabel", "binary" or "multiclass".
        same_on_every_rank: step- or epoch-hook-metric keys that are decisions (e.g. MASAM's
            "dominant", a coefficient, a number of classifiers): every rank must report rank 0's
            value exactly and the single process's within the tolerance, at every step and hook.
        epochs: epochs of `steps_per_epoch` steps (epoch hooks run around each).
        whole_split: the epoch hooks get the whole training split, as the trainer gives every
            rank its `SplitTensors` (`len`, `.y`, `.present`, `.groups`, `.batch(index)` over
            every row of the run, `index` being `batch["index"]`), for methods that compute
            over the training split in a hook (prototypes, held-out estimates); else only
            this rank's shards of the epoch's batches.
    """

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    task_type: str = "multiclass"
    same_on_every_rank: tuple[str, ...] = ()
    epochs: int = 2
    steps_per_epoch: int = 3
    whole_split: bool = False
    name: str = ""

    @property
    def id(self) -> str:
        return self.name or self.method

    def __hash__(self) -> int:  # options is a dict: hash by id
        return hash(self.id)


class LinearEncoder(nn.Linear):
    """z = tanh(x A^T + c): a smooth encoder with `out_dim`, as the encoder contract requires."""

    def __init__(self, in_features: int, out_dim: int):
        super().__init__(in_features, out_dim)
        self.out_dim = out_dim

    def forward(self, x):
        return torch.tanh(super().forward(x))


def num_outputs(task_type: str) -> int:
    return {"multiclass": 3, "multilabel": 4, "binary": 1}[task_type]


def global_batches(case: Case, batch_size: int = 8) -> list[dict]:
    """The global batches of every step, identical on every rank (seeded)."""
    g = torch.Generator().manual_seed(1234)
    k = num_outputs(case.task_type)
    out = []
    for step in range(case.epochs * case.steps_per_epoch):
        inputs = {m: torch.randn(batch_size, IN_FEATURES[m], generator=g, dtype=torch.float64) for m in MODALITIES}
        if case.task_type == "multiclass":
            y = torch.randint(0, k, (batch_size,), generator=g)
        else:
            y = (torch.rand(batch_size, k, generator=g) > 0.5).double()
        present = {m: torch.ones(batch_size, dtype=torch.bool) for m in MODALITIES}
        index = torch.arange(step * batch_size, (step + 1) * batch_size)
        out.append({"inputs": inputs, "present": present, "y": y, "index": index})
    return out


def shard(batch: dict, rank: int, world: int) -> dict:
    """Rank `rank`'s contiguous 1/world of a batch."""
    n = len(batch["y"]) // world
    part = slice(rank * n, (rank + 1) * n)
    return {
        "inputs": {m: x[part] for m, x in batch["inputs"].items()},
        "present": {m: p[part] for m, p in batch["present"].items()},
        "y": batch["y"][part],
        "index": batch["index"][part],
    }


class _Train:
    """The `train_tensors` an epoch hook gets: this rank's shards of the epoch's batches."""

    def __init__(self, batches: list[dict]):
        self._batches = batches

    def __len__(self) -> int:
        return sum(len(b["y"]) for b in self._batches)

    @property
    def rank_samples(self) -> int:
        """Samples this rank steps on per epoch (the trainer's `RankSplit.rank_samples`)."""
        return sum(len(b["y"]) for b in self._batches)

    def batches(self, batch_size: int, generator=None):
        yield from self._batches


class _Split(_Train):
    """The whole training split (every row of every global batch, at its `index`), as the
    trainer's `SplitTensors` that every rank holds; `.batches` still yields this rank's shards."""

    def __init__(self, batches: list[dict], rows: list[dict]):
        super().__init__(batches)
        self.inputs = {m: torch.cat([b["inputs"][m] for b in rows]) for m in MODALITIES}
        self.present = {m: torch.cat([b["present"][m] for b in rows]) for m in MODALITIES}
        self.y = torch.cat([b["y"] for b in rows])
        self.groups = None

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index: torch.Tensor) -> dict:
        return {"inputs": {m: x[index] for m, x in self.inputs.items()},
                "present": {m: p[index] for m, p in self.present.items()},
                "y": self.y[index], "index": index}


def _decisions(case: Case, metrics: dict) -> dict[str, float]:
    return {k: float(metrics[k]) for k in case.same_on_every_rank if k in metrics}


def run_case(case: Case, rank: int, world: int) -> dict[str, Any]:
    """Train `case` on this rank's shards; return final parameters and the decision metrics
    (`case.same_on_every_rank`) of every epoch hook and step, in order."""
    torch.manual_seed(0)
    encoders = {m: LinearEncoder(IN_FEATURES[m], HIDDEN) for m in MODALITIES}
    cls = METHODS[case.method]
    model = cls.build_model(encoders, num_outputs(case.task_type), case.task_type, dict(case.options)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = cls(model, optimizer, case.task_type, **case.options)
    whole = global_batches(case)
    batches = [shard(b, rank, world) for b in whole]
    decisions: list[dict[str, float]] = []
    for epoch in range(case.epochs):
        epoch_batches = batches[epoch * case.steps_per_epoch:(epoch + 1) * case.steps_per_epoch]
        train = _Split(epoch_batches, whole) if case.whole_split else _Train(epoch_batches)
        decisions.append(_decisions(case, method.on_epoch_start(epoch, train)))
        for batch in epoch_batches:
            decisions.append(_decisions(case, method.step(batch)))
        decisions.append(_decisions(case, method.on_epoch_end(epoch, train)))
    reported = {k for d in decisions for k in d}
    if case.epochs and set(case.same_on_every_rank) - reported:  # a misspelt key would check nothing
        raise KeyError(f"{case.id}: no hook or step reported {sorted(set(case.same_on_every_rank) - reported)}")
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"params": params, "decisions": decisions}


def _worker(rank: int, world: int, init_file: str, cases: list[Case], out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {case.id: run_case(case, rank, world) for case in cases}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_distributed(cases: list[Case], out_dir: Path, world: int = 2) -> list[dict[str, dict]]:
    """Run every case in `world` spawned gloo processes; per-rank results, rank order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    init_file = out_dir / "rendezvous"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(world, str(init_file), cases, str(out_dir)), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(world)]
