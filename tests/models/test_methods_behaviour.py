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


class _Echo(torch.nn.Module):
    """A stand-in fusion model: fused logits = the sum of the present modalities' inputs `[B, 2]`,
    unimodal logits = each input itself."""

    def __init__(self, modalities=("a", "b")):
        super().__init__()
        self.modalities = list(modalities)

    def forward(self, inputs, present):
        from types import SimpleNamespace

        fused = sum(inputs[m] * present[m][:, None] for m in self.modalities)
        return SimpleNamespace(fused=fused, unimodal=dict(inputs))


A, B = torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, -1.0]])


def test_the_exportable_gives_the_sigmoid_of_the_fused_logits_for_multilabel_and_binary_tasks():
    for task_type in ("multilabel", "binary"):
        wrapped = ExportableFusion(_Echo(), task_type)
        assert wrapped.input_names == ["a", "b", "has_a", "has_b"]
        probs = wrapped(A, B, torch.ones(1), torch.ones(1))  # fused logits 0 + 2, 1 - 1
        assert torch.allclose(probs, torch.sigmoid(torch.tensor([[2.0, 0.0]]))), task_type


def test_the_exportable_gives_the_softmax_over_classes_for_a_multiclass_task():
    probs = ExportableFusion(_Echo(), "multiclass")(A, B, torch.ones(1), torch.ones(1))
    e = torch.exp(torch.tensor(2.0))
    assert torch.allclose(probs, torch.tensor([[e / (e + 1), 1 / (e + 1)]]))


def test_the_exportable_of_a_unimodal_run_returns_that_modality_s_head():
    probs = ExportableFusion(_Echo(), "multilabel", head="unimodal:b")(A, B, torch.ones(1), torch.ones(1))
    assert torch.allclose(probs, torch.sigmoid(B))


def test_a_presence_flag_counts_as_present_only_above_one_half():
    wrapped = ExportableFusion(_Echo(), "multilabel")
    for flag, fused in ((1.0, [[2.0, 0.0]]), (0.0, [[0.0, 1.0]]), (0.5, [[0.0, 1.0]])):
        probs = wrapped(A, B, torch.ones(1), torch.tensor([flag]))
        assert torch.allclose(probs, torch.sigmoid(torch.tensor(fused))), flag


def test_an_unknown_task_type_is_named():
    with pytest.raises(ValueError, match="unknown task_type 'regression'"):
        ExportableFusion(_Echo(), "regression")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_exportable_takes_each_modality_then_each_flag_in_order_for_one_to_three_modalities(n):
    xs = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 10.0]]), torch.tensor([[100.0, 0.0]])][:n]
    wrapped = ExportableFusion(_Echo([f"m{i}" for i in range(n)]), "multilabel")
    for absent in range(n):  # each modality's own flag removes that modality's input, and only it
        flags = [torch.tensor([0.0 if i == absent else 1.0]) for i in range(n)]
        expected = sum(x for i, x in enumerate(xs) if i != absent) + torch.zeros(1, 2)
        assert torch.allclose(wrapped(*xs, *flags), torch.sigmoid(expected)), (n, absent)


def test_the_exportable_refuses_more_flags_than_modalities():
    with pytest.raises(ValueError, match="zip"):
        ExportableFusion(_Echo(), "multilabel").probabilities(A, B, torch.ones(1), torch.ones(1), torch.ones(1))


def test_a_unimodal_head_names_everything_after_the_first_colon():
    probs = ExportableFusion(_Echo(["a", "b:2"]), "multilabel", head="unimodal:b:2")(A, B, torch.ones(1),
                                                                                    torch.ones(1))
    assert torch.allclose(probs, torch.sigmoid(B))
