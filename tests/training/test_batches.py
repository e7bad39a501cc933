"""Batches: uint8 films become float [0, 1] on the device; on CUDA they are held on the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.pipeline.data import gather_to_device, load_cohort, split_tensors


def test_a_batch_holds_the_films_scaled_to_unit_range_with_a_channel_axis(mimic_cohort):
    cohort = load_cohort(mimic_cohort)
    train = split_tensors(cohort, "train", "cpu")
    rows = torch.tensor([3, 0, 5])
    batch = train.batch(rows)
    raw = np.asarray(cohort.arrays["cxr"][cohort.rows("train")[[3, 0, 5]]])
    assert batch["inputs"]["cxr"].dtype == torch.float32 and batch["inputs"]["cxr"].shape == (3, 1, *raw.shape[1:])
    assert torch.equal(batch["inputs"]["cxr"], torch.from_numpy(raw).float().div(255.0).unsqueeze(1))
    # the host copy of the index, when given, selects the same rows
    again = train.batch(rows, host_index=rows.clone())
    assert all(torch.equal(again["inputs"][m], batch["inputs"][m]) for m in batch["inputs"])


def test_gathering_host_rows_to_a_device_keeps_values_and_dtype():
    x = torch.arange(5 * 2 * 2, dtype=torch.uint8).reshape(5, 2, 2)
    got = gather_to_device(x, torch.tensor([4, 1]), torch.device("cpu"))
    assert got.dtype == torch.uint8 and torch.equal(got, x[[4, 1]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_films_stay_on_the_host_and_batches_equal_the_cpu_ones(mimic_cohort):
    cohort = load_cohort(mimic_cohort)
    cpu, cuda = split_tensors(cohort, "train", "cpu"), split_tensors(cohort, "train", "cuda")
    assert cuda.inputs["cxr"].device.type == "cpu" and cuda.inputs["ehr"].device.type == "cuda"
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for a, b in zip(cpu.batches(4, g1), cuda.batches(4, g2), strict=True):
        for m in a["inputs"]:
            assert b["inputs"][m].device.type == "cuda"
            if m == "ehr":
                assert torch.equal(a["inputs"][m], b["inputs"][m].cpu())
            else:  # CUDA divides by the scalar 255 as a product with its reciprocal: within 2 float32 ulps
                torch.testing.assert_close(a["inputs"][m], b["inputs"][m].cpu(), rtol=2.4e-7, atol=0)
