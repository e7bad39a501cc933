"""AUG: boosting weights, classifier assignment, growing network rebuilt from config + state."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from clinfuse.models.export import ExportableFusion
from clinfuse.models.losses import per_sample_loss
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.aug import AUGNet, boosted_loss, correct_probability
from tests.models.test_mla import INIT, XS, LinearEncoder, Y

F64 = torch.float64
MODS = ("ehr", "cxr")


def aug_model(mods=MODS, max_classifiers=3, **kw) -> AUGNet:
    torch.manual_seed(0)
    return AUGNet({m: LinearEncoder(INIT[m]) for m in mods}, 1, hidden=3, max_classifiers=max_classifiers,
                  **kw).double()


def batch(mods=MODS):
    return {"inputs": {m: XS[m] for m in mods}, "present": {m: torch.ones(3, dtype=torch.bool) for m in mods}, "y": Y}


def method(model, lr=0.5, **options):
    return METHODS["aug"](model, torch.optim.SGD(model.parameters(), lr=lr), "binary",
                          max_classifiers=model.max_classifiers, **options)


def test_newest_classifier_weights_samples_by_how_wrong_the_earlier_ones_were_softmax():
    o = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], dtype=F64)  # p(class 1) = 0.75; then 0.5
    d = torch.zeros(2, 2, dtype=F64)  # CE = log 2 for both samples
    y = torch.tensor([1, 0])
    got = boosted_loss(d, o, y, "multiclass", beta=0.5)
    assert torch.allclose(got, torch.tensor([(1 - 0.5 * 0.75) * math.log(2), (1 - 0.5 * 0.5) * math.log(2)],
                                            dtype=F64), atol=1e-6)


def test_newest_classifier_weights_each_label_for_sigmoid_tasks():
    o = torch.tensor([[math.log(3.0), math.log(3.0)]], dtype=F64)  # p = 0.75 for both labels
    d = torch.zeros(1, 2, dtype=F64)  # BCE = log 2 per label
    y = torch.tensor([[1.0, 0.0]], dtype=F64)  # correct with 0.75, then with 0.25
    got = boosted_loss(d, o, y, "multilabel", beta=0.5)
    assert got.item() == pytest.approx(((1 - 0.375) + (1 - 0.125)) / 2 * math.log(2), abs=1e-6)
    assert torch.allclose(correct_probability(o, y, "multilabel"), torch.tensor([[0.75, 0.25]], dtype=F64))


def test_modality_logits_are_the_sum_of_its_active_branches_through_the_shared_classifier():
    model = aug_model()
    model.active[1] = 2
    z = model.encoders["cxr"](XS["cxr"])
    c = model.classifier
    expected = sum(c(torch.relu(layer(z))) for layer in [model.base["cxr"], *model.extra["cxr"][:2]])
    assert torch.allclose(model.modality_logits("cxr", z), expected, atol=1e-12)
    assert torch.allclose(model.modality_logits("ehr", model.encoders["ehr"](XS["ehr"])),
                          c(torch.relu(model.base["ehr"](model.encoders["ehr"](XS["ehr"])))), atol=1e-12)


def test_prediction_is_the_weighted_mean_of_present_modalities_logits():
    model = aug_model(fusion_weights={"ehr": 0.4, "cxr": 0.6})
    unimodal = {"ehr": torch.tensor([[1.0], [1.0]], dtype=F64), "cxr": torch.tensor([[-2.0], [-2.0]], dtype=F64)}
    present = {"ehr": torch.tensor([True, True]), "cxr": torch.tensor([True, False])}
    fused = model.combine(unimodal, present)
    assert torch.allclose(fused, torch.tensor([[0.4 * 1.0 + 0.6 * -2.0], [1.0]], dtype=F64), atol=1e-12)


def test_step_with_a_boosting_classifier_minimises_ensemble_earlier_and_weighted_newest_losses():
    model = aug_model()
    model.active[0] = 2
    m = method(model)
    z = model.encoders["ehr"](XS["ehr"])
    base, x0, x1 = model.branch_logits("ehr", z, 2)
    bce = per_sample_loss
    p = torch.sigmoid(base + x0).detach()
    weight = (Y * p + (1 - Y) * (1 - p))[:, 0]
    expected = (bce(base + x0 + x1, Y, "binary") + bce(base + x0, Y, "binary")
                + (1 - 0.5 * weight) * bce(x1, Y, "binary")).mean()
    metrics = m.step(batch())
    assert metrics["loss_ehr"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert metrics["boost_weight_ehr"].item() == pytest.approx((1 - 0.5 * weight).mean().item(), abs=1e-6)
    assert metrics["boost_weight_cxr"].item() == 1.0


def test_the_optimizer_trains_added_classifiers_and_leaves_inactive_ones_alone():
    model = aug_model()
    before = copy.deepcopy(model.state_dict())
    m = method(model)
    m.step(batch())
    model.active[1] = 1  # cxr is boosted
    m.step(batch())
    after = model.state_dict()
    assert not torch.equal(before["extra.cxr.0.weight"], after["extra.cxr.0.weight"])
    for key in ("extra.cxr.1.weight", "extra.ehr.0.weight", "extra.ehr.0.bias"):
        assert torch.equal(before[key], after[key]), key


def test_assignment_boosts_the_weaker_modality_once_per_check():
    model = aug_model()
    m = method(model)
    m.score_sum.copy_(torch.tensor([0.8 * 4, 0.5 * 4]))
    m.score_count.fill_(4)
    metrics = m.on_epoch_start(1, None)
    assert model.active.tolist() == [0, 1]
    assert metrics["boosted"].item() == 1 and metrics["ratio"].item() == pytest.approx(1.6)
    assert metrics["score_ehr"].item() == pytest.approx(0.8) and metrics["classifiers_cxr"].item() == 1
    assert m.score_count.sum().item() == 0  # scores restart with the epoch


def test_assignment_leaves_balanced_modalities_and_full_budgets_alone():
    model = aug_model(max_classifiers=1)
    m = method(model)
    m.score_sum.copy_(torch.tensor([0.7, 0.7 * 1.005]))
    m.score_count.fill_(1)
    assert m.on_epoch_start(1, None)["boosted"].item() == -1  # ratio 1.005 is within tolerance 0.01
    model.active[1] = 1
    m.score_sum.copy_(torch.tensor([0.9, 0.3]))
    m.score_count.fill_(1)
    assert m.on_epoch_start(2, None)["boosted"].item() == -1 and model.active.tolist() == [0, 1]


def test_assignment_runs_every_check_every_epochs_after_the_first():
    m = method(aug_model(), check_every=2)
    checks = []
    for epoch in range(6):
        m.score_sum.copy_(torch.tensor([0.9, 0.3]))
        m.score_count.fill_(1)
        checks.append(bool(m.on_epoch_start(epoch, None)))
    assert checks == [False, True, False, True, False, True]


def test_without_extra_classifiers_aug_is_alternating_unimodal_training():
    a, b = aug_model(max_classifiers=0), aug_model(max_classifiers=0)
    m = method(a)
    for _ in range(2):
        m.step(batch())
    params = list(b.parameters())
    for _ in range(2):
        for mod in MODS:
            logits = b.classifier(torch.relu(b.base[mod](b.encoders[mod](XS[mod]))))
            grads = torch.autograd.grad(nn.functional.binary_cross_entropy_with_logits(logits, Y), params,
                                        allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    if g is not None:
                        p -= 0.5 * g
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-12), name


def test_a_grown_network_is_rebuilt_from_config_and_state():
    model = aug_model()
    model.active[1] = 2
    clone = aug_model()
    clone.load_state_dict(model.state_dict())
    b = batch()
    assert clone.active.tolist() == [0, 2]
    assert torch.equal(clone(b["inputs"], b["present"]).fused, model(b["inputs"], b["present"]).fused)


def test_grown_network_exports_for_the_registry():
    model = aug_model().float().eval()
    model.active[0] = 1
    wrapped = ExportableFusion(model, "binary").eval()
    args = (XS["ehr"].float(), XS["cxr"].float(), torch.ones(3), torch.tensor([1.0, 0.0, 1.0]))
    exported = torch.export.export(wrapped, args)
    assert torch.allclose(exported.module()(*args), wrapped(*args), atol=1e-6)


def test_aug_state_round_trip_continues_identically():
    model = aug_model()
    model.active[1] = 1
    m = method(model)
    m.step(batch())
    clone_model = copy.deepcopy(model)
    clone = method(clone_model)
    clone.load_state_dict(copy.deepcopy(m.state_dict()))
    assert torch.equal(clone.score_sum, m.score_sum) and clone.score_count.sum() > 0
    assert m.on_epoch_start(1, None)["ratio"].item() == clone.on_epoch_start(1, None)["ratio"].item()
    m.step(batch())
    clone.step(batch())
    for pa, pb in zip(model.parameters(), clone_model.parameters(), strict=True):
        assert torch.equal(pa, pb)
