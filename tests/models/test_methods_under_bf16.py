"""Every method trains under bf16 autocast, as the trainer runs it on CUDA (train.bf16).

Autocast runs matrix products in bf16, so anything a method computes from gradients with a matmul
comes back bf16; the parameters and their gradients must stay float32. CPU autocast casts the same
ops (matmul, linear, conv) as CUDA's, so this runs everywhere. Found on an H100: IGM's Eq. 5
projection `g @ T_k` came back bf16 and PyTorch refused it as a float32 parameter's gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.models.build import build_model
from clinfuse.models.methods import METHODS
from clinfuse.pipeline.data import SplitTensors

SPEC = {"ehr": {"name": "ehr_lstm", "hidden": 4}, "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 4}}
# oneDNN has no bf16 LSTM kernel on CPUs without AVX-512 bf16 support (seen on an AMD EPYC: "could not
# create a primitive descriptor for the LSTM forward propagation primitive"); the trainer autocasts on
# CUDA only, where cuDNN runs it. On the CPU the EHR encoder is the transformer, whose linear layers
# autocast lowers to bf16 just the same, so the methods' arithmetic is what is tested either way.
CPU_SPEC = {**SPEC, "ehr": {"name": "ehr_transformer", "d_model": 4, "nhead": 2, "num_layers": 1, "dropout": 0.0}}
SHAPES = {"ehr": (48, 24), "cxr": (1, 16, 16)}


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def batch(n: int = 6, labels: int = 3, binary: bool = False) -> dict:
    g = torch.Generator().manual_seed(0)
    ehr = torch.randn(n, 48, 24, generator=g)
    ehr[..., 12:] = (ehr[..., 12:] > 0).float()
    y = torch.tensor([[1.0], [0.0]] * (n // 2)) if binary else (torch.rand(n, labels, generator=g) > 0.5).float()
    return {"inputs": {"ehr": ehr, "cxr": torch.rand(n, 1, 16, 16, generator=g)},
            "present": {m: torch.ones(n, dtype=torch.bool) for m in ("ehr", "cxr")},
            "y": y, "index": torch.arange(n)}


def to(b: dict, device: str) -> dict:
    return {k: {m: t.to(device) for m, t in v.items()} if isinstance(v, dict) else v.to(device) for k, v in b.items()}


def as_split(b: dict) -> SplitTensors:
    images = (b["inputs"]["cxr"][:, 0] * 255).round().to(torch.uint8)
    return SplitTensors(np.arange(len(b["y"])), {"ehr": b["inputs"]["ehr"], "cxr": images}, b["present"], b["y"])


def carried_dtypes(method) -> list[torch.dtype]:
    return [t.dtype for t in vars(method).values() if isinstance(t, torch.Tensor)] + [
        t.dtype for d in vars(method).values() if isinstance(d, dict) for t in d.values() if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_steps_under_bf16_autocast_keep_float32_parameters_and_move_them(name, device):
    torch.manual_seed(0)
    binary = name == "pmr"  # PMR's prototypes need single-label classes
    task_type = "binary" if binary else "multilabel"
    options = {"modality": "ehr"} if name == "unimodal" else {}
    b = to(batch(binary=binary), device)
    model = build_model(SPEC if device == "cuda" else CPU_SPEC, ["ehr", "cxr"], SHAPES, b["y"].shape[1], method=name, task_type=task_type,
                        options=options).to(device)
    method = METHODS[name](model, torch.optim.SGD(model.parameters(), lr=0.1), task_type, **options)
    before = [p.detach().clone() for p in model.parameters()]
    method.on_epoch_start(0, as_split(b))
    for _ in range(2):
        with torch.autocast(device, dtype=torch.bfloat16):
            method.step(b)
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 for p in params), name
    assert all(torch.isfinite(p).all() for p in params), name
    assert any(not torch.equal(p, q) for p, q in zip(params, before, strict=True)), f"{name}: nothing moved"
    # no state a method carries between steps turned bf16 (MLA's projector, IGM's T_k, moving averages)
    assert torch.bfloat16 not in carried_dtypes(method), name
