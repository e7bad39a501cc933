"""Read a processed cohort folder (docs/cohort-format.md) into tensors for training.

Images stay uint8 in host memory and are scaled to [0, 1] per batch on the device:
nothing is decoded during training, and a 224 px paired cohort (about 2.3 GB for 45,000
films) costs host memory, not device memory. On CUDA each batch's films are gathered
into page-locked (pinned) host memory and copied with `non_blocking=True`, so the copy
does not make the host wait for the GPU; the other modalities (small) live on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.etl.atomic import recover_dir
from clinfuse.etl.errors import InputError
from clinfuse.pipeline.cohort_checks import check_array, check_samples, read_array, read_samples
from clinfuse.pipeline.manifest import CohortManifest, read_manifest

IMAGE_MODALITIES = {"cxr", "mri"}  # uint8 arrays, one channel


@dataclass
class Cohort:
    """A processed cohort: manifest, samples table and memory-mapped arrays."""

    path: Path
    manifest: CohortManifest
    samples: pd.DataFrame
    arrays: dict[str, np.ndarray]

    @property
    def task_type(self) -> str:
        return self.manifest.task_type

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest.modalities)

    @property
    def label_names(self) -> list[str]:
        """Output names: the label columns, or the class names for a multi-class task."""
        if self.task_type == "multiclass":
            return list(self.manifest.class_names)
        return list(self.manifest.label_columns)

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    @property
    def name(self) -> str:
        return self.path.name

    def input_shape(self, modality: str) -> tuple[int, ...]:
        """Per-sample input shape as the model sees it (images get a channel axis)."""
        shape = tuple(self.arrays[modality].shape[1:])
        return (1, *shape) if modality in IMAGE_MODALITIES else shape

    def labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """`[N, K]` float32 (multilabel/binary) or `[N]` int64 (multiclass)."""
        frame = self.samples if rows is None else self.samples.iloc[rows]
        if self.task_type == "multiclass":
            return frame[self.manifest.label_columns[0]].to_numpy(np.int64)
        return frame[self.manifest.label_columns].to_numpy(np.float32)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.samples["split"].to_numpy() == split)


def load_cohort(path: str | Path) -> Cohort:
    """Open a processed cohort folder; errors name the missing file or key (and a cohort written by
    another schema version is refused)."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    recover_dir(path)  # finish a swap a killed ETL left half-done
    if not path.is_dir():
        raise InputError(f"{path}: cohort folder not found (run `clinfuse etl ...` first)")
    if not manifest_path.is_file():
        raise InputError(f"{manifest_path}: missing; expected a processed cohort folder with manifest.json")
    manifest = read_manifest(manifest_path)
    samples_path = path / "samples.parquet"
    if not samples_path.is_file():
        raise InputError(f"{samples_path}: missing; expected one row per sample")
    samples = read_samples(samples_path)
    arrays = {}
    for m in manifest.modalities:
        array_path = path / f"{m}.npy"
        if not array_path.is_file():
            raise InputError(f"{array_path}: missing array for modality '{m}'")
        arrays[m] = read_array(array_path)
        check_array(array_path, arrays[m], m, manifest, len(samples))
        if f"has_{m}" not in samples.columns:
            raise InputError(f"{samples_path}: missing column 'has_{m}'")
    for column in [*manifest.label_columns, manifest.patient_column, "split"]:
        if column not in samples.columns:
            raise InputError(f"{samples_path}: missing column '{column}'")
    check_samples(samples_path, samples, manifest)
    return Cohort(path, manifest, samples, arrays)


@dataclass
class SplitTensors:
    """One split held in memory: inputs `{m: [N, ...]}` (images uint8, on the host when training
    on CUDA), present `{m: [N]}`, y (on the device).

    `groups` `[N]` holds each row's patient id (the manifest's `patient_column`; methods that
    carve a held-out part of the training split keep patients whole).
    """

    rows: np.ndarray
    inputs: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    y: torch.Tensor
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def rank_samples(self) -> int:
        """Samples this process steps on per epoch: all of them in one process (under torchrun the
        trainer hands epoch hooks a `pipeline.data_parallel.RankSplit` with this rank's share)."""
        return len(self)

    def batch(self, index: torch.Tensor, host_index: torch.Tensor | None = None) -> dict[str, Any]:
        """The batch contract: images as float `[B, 1, ...]` in [0, 1], on the device.

        Args:
            index: `[B]` each sample's position in this split (a stable sample key for
                methods that treat some training rows differently, e.g. G-Blend's held-out part).
            host_index: the same positions on the CPU, for inputs held in host memory
                (without it they are read back from `index`, a host sync on CUDA).
        """
        inputs = {}
        device = self.y.device
        for m, x in self.inputs.items():
            if x.device == device:
                xb = x[index]
            else:  # uint8 films held on the host
                xb = gather_to_device(x, index.cpu() if host_index is None else host_index, device)
            if m in IMAGE_MODALITIES:  # normalised where the batch now is (the device)
                xb = (xb.float() / 255.0).unsqueeze(1)
            inputs[m] = xb
        return {
            "inputs": inputs,
            "present": {m: p[index] for m, p in self.present.items()},
            "y": self.y[index],
            "index": torch.as_tensor(index, device=self.y.device),
        }

    def batches(self, batch_size: int, generator: torch.Generator | None = None, rank: int = 0,
                world: int = 1) -> Iterator[dict]:
        """Shuffled batches when a generator is given, in order otherwise.

        With `world` > 1 (data parallel), `batch_size` is the GLOBAL batch: the permutation and
        the global batches are those of one process, and rank `rank` takes the contiguous
        `rank`-th of `world` equal parts of each (batch_size / world samples), so the ranks
        together see exactly one process's batch at every step. A last global batch whose size
        is not a multiple of `world` is padded, as `DistributedSampler` pads an epoch, with
        the first samples of the epoch's permutation (at most world - 1 repeats per epoch).
        """
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]  # on the host: the rank's part costs no device sync
            if world > 1:
                pad = -len(index) % world
                if pad:  # (a split smaller than the padding repeats itself)
                    index = torch.cat([index, order.repeat(-(-pad // n))[:pad]])
                index = index.view(world, -1)[rank]
            yield self.batch(to_device(index, self.y.device), index)

    def shard(self, rank: int, world: int) -> SplitTensors:
        """Rank `rank`'s contiguous part of the rows (views, no copy); parts differ in size by at most one.

        Concatenating the parts of ranks 0..world-1 gives the split in its original row order.
        """
        bounds = shard_bounds(len(self), world)
        part = slice(bounds[rank], bounds[rank + 1])
        groups = None if self.groups is None else self.groups[part]
        return SplitTensors(self.rows[part], {m: x[part] for m, x in self.inputs.items()},
                            {m: p[part] for m, p in self.present.items()}, self.y[part], groups)


def shard_bounds(n: int, world: int) -> list[int]:
    """Start of each of `world` contiguous parts of `n` rows, plus n (the first n % world parts get one more)."""
    base, extra = divmod(n, world)
    bounds = [0]
    for r in range(world):
        bounds.append(bounds[-1] + base + (r < extra))
    return bounds


def gather_to_device(x: torch.Tensor, host_index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows `host_index` of the host tensor `x`, on `device`.

    For CUDA the rows are gathered into pinned memory (PyTorch's caching host allocator keeps
    the buffer alive until the asynchronous copy has finished) and copied with `non_blocking`.
    """
    if device.type != "cuda":
        return x[host_index].to(device)
    staged = torch.empty((len(host_index), *x.shape[1:]), dtype=x.dtype, pin_memory=True)
    torch.index_select(x, 0, host_index, out=staged)
    return staged.to(device, non_blocking=True)


def to_device(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`. On CUDA it goes through pinned memory with `non_blocking`: a copy
    from pageable memory makes the host wait for the GPU, once per batch."""
    if device.type != "cuda":
        return index.to(device)
    return index.pin_memory().to(device, non_blocking=True)


def held_on_host(modality: str, device: torch.device | str) -> bool:
    """uint8 films stay in host memory when training on CUDA (see the module docstring)."""
    return modality in IMAGE_MODALITIES and torch.device(device).type == "cuda"


def split_tensors(cohort: Cohort, split: str, device: torch.device | str = "cpu") -> SplitTensors:
    """Copy one split of the cohort into memory: films on the host, the rest on `device`."""
    rows = cohort.rows(split)
    inputs, present = {}, {}
    for m in cohort.modalities:
        arr = torch.from_numpy(np.ascontiguousarray(cohort.arrays[m][rows]))
        inputs[m] = arr if held_on_host(m, device) else arr.to(device)
        present[m] = torch.from_numpy(cohort.samples[f"has_{m}"].to_numpy(bool)[rows]).to(device)
    y = torch.from_numpy(np.array(cohort.labels(rows))).to(device)
    groups = cohort.samples[cohort.manifest.patient_column].to_numpy()[rows]
    return SplitTensors(rows, inputs, present, y, groups)
