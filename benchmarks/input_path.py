"""Training input path with the model replaced by a no-op: can the host feed a GPU?

Issue 29's target: the batches a GPU consumes at the paper preset (224 px films from the cohort
cache, EHR tensors) are produced at >= 4,000 samples/s on this CPU, so the data path never starves
an H100 (late fusion trains at about 2,000 samples/s there at batch 64).

What is timed, one epoch over the training split per setting (after one warm-up epoch):
  host-for-cuda  the host's work per batch when training on CUDA (pipeline.data.SplitTensors.batches):
                 a shuffled permutation, the uint8 films of the batch gathered into a staging buffer
                 (pinned on CUDA; the copy itself and the float conversion run on the device), the
                 EHR tensors, masks and labels indexed where they are held (the device, here the CPU).
  cpu            the whole batch on the CPU as CPU training builds it (the gather, films converted to
                 float in [0, 1] `[B, 1, S, S]`): an upper bound on the host's work.
The films are the cohort's own cache (`--cohort data/processed/<cohort>`: its training split, at the
size its ETL cached) or, without --cohort, random uint8 films of `--size` px for `--n` stays (7,756:
MedFuse's phenotype training split at full MIMIC size) and EHR `[n, 48, 24]`.

Prints per setting `<setting> samples_per_s=<r> ms_per_batch=<t>` and last
`input path: <r> samples/s (host-for-cuda, batch <B>, <S> px) against the 4,000 target`.
Usage: python benchmarks/input_path.py [--cohort DIR] [--size 224] [--n 7756] [--batch-size 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from clinfuse.pipeline.data import IMAGE_MODALITIES, SplitTensors

TARGET = 4000


def synthetic_split(n: int, size: int) -> SplitTensors:
    """n paired stays: EHR `[n, 48, 24]` (12 values + 12 masks), uint8 films `[n, size, size]`, 25 labels."""
    g = torch.Generator().manual_seed(0)
    ehr = torch.randn(n, 48, 24, generator=g)
    ehr[..., 12:] = (ehr[..., 12:] > 0).float()
    films = torch.randint(0, 256, (n, size, size), generator=g, dtype=torch.uint8)
    present = {m: torch.ones(n, dtype=torch.bool) for m in ("ehr", "cxr")}
    y = (torch.rand(n, 25, generator=g) > 0.8).float()
    return SplitTensors(np.arange(n), {"ehr": ehr, "cxr": films}, present, y)


def cohort_split(path: str) -> SplitTensors:
    from clinfuse.pipeline.data import load_cohort, split_tensors

    return split_tensors(load_cohort(path), "train", "cpu")


def host_for_cuda_epoch(split: SplitTensors, batch_size: int, generator: torch.Generator) -> int:
    """The host side of one CUDA epoch: permutation, films gathered into a staging buffer, the rest indexed."""
    n, seen = len(split), 0
    order = torch.randperm(n, generator=generator)
    staging = {m: torch.empty((batch_size, *x.shape[1:]), dtype=x.dtype)
               for m, x in split.inputs.items() if m in IMAGE_MODALITIES}
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        for m, x in split.inputs.items():
            if m in IMAGE_MODALITIES:
                torch.index_select(x, 0, index, out=staging[m][:len(index)])
            else:
                x[index]  # noqa: B018 (held on the device in a CUDA run: indexed there)
        for p in split.present.values():
            p[index]  # noqa: B018
        split.y[index]  # noqa: B018
        seen += len(index)
    return seen


def cpu_epoch(split: SplitTensors, batch_size: int, generator: torch.Generator) -> int:
    """One epoch of whole CPU batches (the no-op model reads nothing)."""
    return sum(len(batch["y"]) for batch in split.batches(batch_size, generator))


def timed(epoch, split: SplitTensors, batch_size: int) -> tuple[float, float]:
    """(samples/s, ms per batch) of one epoch after a warm-up epoch."""
    epoch(split, batch_size, torch.Generator().manual_seed(1))
    t = time.perf_counter()
    seen = epoch(split, batch_size, torch.Generator().manual_seed(0))
    elapsed = time.perf_counter() - t
    return seen / elapsed, 1000 * elapsed / -(-seen // batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", default=None, help="a processed cohort folder (its training split's cached films)")
    parser.add_argument("--size", type=int, default=224, help="film size without --cohort")
    parser.add_argument("--n", type=int, default=7756, help="training stays without --cohort")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = cohort_split(args.cohort) if args.cohort else synthetic_split(args.n, args.size)
    film = next((x for m, x in split.inputs.items() if m in IMAGE_MODALITIES), None)
    size = film.shape[-1] if film is not None else 0
    print(f"input_path: {len(split):,} training stays, films {tuple(film.shape[1:]) if film is not None else None} "
          f"uint8 ({film.numel() / 1e6 if film is not None else 0:,.0f} MB), batch {args.batch_size}, "
          f"{args.threads} threads", flush=True)
    results = {}
    for name, epoch in (("host-for-cuda", host_for_cuda_epoch), ("cpu", cpu_epoch)):
        rate, ms = timed(epoch, split, args.batch_size)
        results[name] = rate
        print(f"{name} samples_per_s={rate:,.0f} ms_per_batch={ms:.2f}", flush=True)
    verdict = "meets" if results["host-for-cuda"] >= TARGET else "misses"
    print(f"input path: {results['host-for-cuda']:,.0f} samples/s (host-for-cuda, batch {args.batch_size}, {size} px) "
          f"{verdict} the {TARGET:,} target; whole CPU batches {results['cpu']:,.0f} samples/s")


if __name__ == "__main__":
    main()
