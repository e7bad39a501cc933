"""Second-pass hygiene, missing modalities and export, on the small CPU encoders."""

from __future__ import annotations

import copy

import pytest
import torch

from clinfuse.models.build import build_model
from clinfuse.models.export import ExportableFusion
from clinfuse.models.losses import task_loss
from clinfuse.models.methods import METHODS

SPEC = {
    "ehr": {"name": "ehr_transformer", "d_model": 16, "nhead": 2, "num_layers": 1, "dropout": 0.5},
    "cxr": {"name": "small_cnn", "channels": [4, 8], "out_dim": 8},
}
SHAPES = {"ehr": (48, 24), "cxr": (1, 16, 16)}


def make_batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": {"ehr": torch.randn(b, 48, 24, generator=g), "cxr": torch.rand(b, 1, 16, 16, generator=g)},
        "present": {"ehr": torch.ones(b, dtype=torch.bool), "cxr": torch.tensor([1, 0, 1, 1, 0, 1]).bool()},
        "y": (torch.rand(b, 3, generator=g) > 0.5).float(),
    }


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return build_model(SPEC, ["ehr", "cxr"], SHAPES, 3)


def step(name, model, batch, **opts):
    torch.manual_seed(123)
    method = METHODS[name](model, torch.optim.SGD(model.parameters(), lr=0.1), "multilabel", **opts)
    return method.step(batch)


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_second_pass_leaves_batchnorm_running_stats_untouched(variant):
    batch = make_batch()
    a, b = fresh_model(), fresh_model()
    step("masam", a, batch, rho=0.5, dominant="cxr", variant=variant)
    step("late_fusion", b, batch)
    for (name, buf_a), buf_b in zip(a.named_buffers(), b.buffers(), strict=True):
        assert torch.equal(buf_a, buf_b), name


def test_second_pass_replays_the_first_pass_dropout_masks():
    # rho = 0: the perturbed pass is at the same point, so its gradient equals the
    # first pass's only if the dropout masks are the same (dropout 0.5 in the EHR encoder).
    batch = make_batch()
    a, b = fresh_model(), fresh_model()
    step("masam", a, batch, rho=0.0, dominant="ehr")
    step("late_fusion", b, batch)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name


def test_sam_second_pass_freezes_batchnorm_and_replays_dropout():
    batch = make_batch()
    a, b = fresh_model(), fresh_model()
    step("sam", a, batch, rho=0.0)
    step("late_fusion", b, batch)
    for pa, pb in zip(list(a.parameters()) + list(a.buffers()), list(b.parameters()) + list(b.buffers()), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_absent_modality_is_masked_from_its_unimodal_loss():
    logits = torch.tensor([[10.0], [-3.0], [0.0]])
    y = torch.tensor([[0.0], [0.0], [1.0]])
    present = torch.tensor([False, True, True])
    expected = task_loss(logits[1:], y[1:], "binary")
    assert task_loss(logits, y, "binary", present).item() == pytest.approx(expected.item())
    assert task_loss(logits, y, "binary", torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_absent_modality_features_do_not_reach_the_fusion_head():
    model = fresh_model().eval()
    batch = make_batch()
    out = model(batch["inputs"], batch["present"])
    changed = copy.deepcopy(batch["inputs"])
    changed["cxr"][1] = torch.rand(1, 16, 16)  # sample 1 has no CXR
    out2 = model(changed, batch["present"])
    assert torch.equal(out.fused[1], out2.fused[1])


def test_unimodal_method_trains_only_its_encoder_and_head():
    model = fresh_model()
    before = copy.deepcopy(model.state_dict())
    step("unimodal", model, make_batch(), modality="cxr")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("encoders.cxr", "unimodal_heads.cxr")) for k in changed)


@pytest.mark.parametrize("task_type", ["multilabel", "multiclass"])
def test_fusion_model_exports_for_the_registry(task_type):
    model = fresh_model().eval()
    wrapped = ExportableFusion(model, task_type).eval()
    b = make_batch()
    args = (b["inputs"]["ehr"], b["inputs"]["cxr"], b["present"]["ehr"].float(), b["present"]["cxr"].float())
    exported = torch.export.export(wrapped, args)
    probs = exported.module()(*args)
    assert probs.shape == (6, 3)
    assert torch.allclose(probs, wrapped(*args), atol=1e-6)
    if task_type == "multiclass":
        assert torch.allclose(probs.sum(1), torch.ones(6), atol=1e-6)
