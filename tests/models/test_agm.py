"""AGM (Li et al., ICCV 2023) checked by hand on a float64 linear model."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clinfuse.models.methods import METHODS
from clinfuse.models.methods.agm import shapley_contributions
from tests.models.tiny_fusion import deltas, numpy_params, sgd, softmax, tiny_batch, tiny_model


def hand_slices(model, batch):
    enc, w, b = numpy_params(model)
    out, start = {}, 0
    for m in model.modalities:
        a, c = enc[m]
        z = batch["inputs"][m].numpy() @ a.T + c
        out[m] = z @ w[:, start : start + z.shape[1]].T + b / len(model.modalities)
        start += z.shape[1]
    return out


def ce(logits, y):
    return float(-np.log(softmax(logits)[np.arange(len(y)), y]).mean())


@pytest.mark.parametrize("mods", [("a", "v"), ("a", "v", "t")])
def test_shapley_contributions_of_the_linear_head_are_its_slices_and_sum_to_the_fused_logits(mods):
    model, batch = tiny_model(mods), tiny_batch(mods)
    out = model(batch["inputs"], batch["present"])
    phi = shapley_contributions(model, out.features, batch["present"])
    expected = hand_slices(model, batch)
    for m in mods:
        assert np.allclose(phi[m].detach().numpy(), expected[m], atol=1e-12)
    assert torch.allclose(sum(phi.values()), out.fused, atol=1e-12)


def test_shapley_values_of_a_nonlinear_head_follow_the_formula_with_f_of_nothing_zero():
    def fuse(features, present):
        s = sum(features[m] * present[m].double().unsqueeze(1) for m in ("a", "v"))
        return s**2 + 1.0

    fake = SimpleNamespace(modalities=["a", "v"], fuse=fuse)
    za, zv = torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[3.0]], dtype=torch.float64)
    on = torch.tensor([True])
    phi = shapley_contributions(fake, {"a": za, "v": zv}, {"a": on, "v": on})
    # f(av) = 26, f(a) = 5, f(v) = 10, f(empty) := 0
    assert phi["a"].item() == pytest.approx(0.5 * (26 - 10) + 0.5 * 5)
    assert phi["v"].item() == pytest.approx(0.5 * (26 - 5) + 0.5 * 10)


def test_ratios_targets_and_coefficients_follow_the_authors_sign_over_two_steps():
    model = tiny_model()
    method = METHODS["agm"](model, sgd(model, lr=0.0), "multiclass", alpha=0.7)
    b1, b2 = tiny_batch(seed=1), tiny_batch(seed=2)
    s1 = {m: ce(x, b1["y"].numpy()) for m, x in hand_slices(model, b1).items()}
    m1 = method.step(b1)
    r_a = math.exp(s1["v"] - s1["a"])
    assert m1["ratio_a"].item() == pytest.approx(r_a, rel=1e-12)
    assert m1["target_ratio_a"].item() == 1.0  # no history yet: t = 0
    assert m1["coeff_a"].item() == pytest.approx(math.exp(0.7 * (1.0 - r_a)), rel=1e-12)
    assert m1["coeff_v"].item() == pytest.approx(math.exp(0.7 * (1.0 - 1 / r_a)), rel=1e-12)
    # the modality with the lower loss (the stronger one) is slowed, the other sped up
    strong = "a" if s1["a"] < s1["v"] else "v"
    assert m1[f"coeff_{strong}"].item() < 1 < m1[f"coeff_{'v' if strong == 'a' else 'a'}"].item()
    s2 = {m: ce(x, b2["y"].numpy()) for m, x in hand_slices(model, b2).items()}  # lr 0: same model
    m2 = method.step(b2)
    r2_a, target_a = math.exp(s2["v"] - s2["a"]), math.exp(s1["v"] - s1["a"])
    assert m2["target_ratio_a"].item() == pytest.approx(target_a, rel=1e-12)
    assert m2["coeff_a"].item() == pytest.approx(math.exp(0.7 * min(target_a - r2_a, 10.0)), rel=1e-12)
    t = method.state_dict()["running_loss"].numpy()
    assert np.allclose(t, [(s1["a"] + s2["a"]) / 2, (s1["v"] + s2["v"]) / 2], atol=1e-12)


def test_the_cap_bounds_the_exponent():
    model = tiny_model()
    method = METHODS["agm"](model, sgd(model), "multiclass", alpha=1.0, cap=0.01)
    method.running_loss = torch.tensor([0.0, 5.0], dtype=torch.float64)  # r*_a = e^5, far above r_a
    method.steps = torch.tensor(3.0, dtype=torch.float64)
    metrics = method.step(tiny_batch())
    assert metrics["coeff_a"].item() == pytest.approx(math.exp(0.01))


def test_the_gradient_through_each_contribution_is_scaled_by_its_coefficient():
    model, batch = tiny_model(), tiny_batch()
    lf_model, agm_model = copy.deepcopy(model), copy.deepcopy(model)
    METHODS["late_fusion"](lf_model, sgd(lf_model), "multiclass", lambda_m=0.0).step(batch)
    metrics = METHODS["agm"](agm_model, sgd(agm_model), "multiclass", alpha=0.7).step(batch)
    k = {m: metrics[f"coeff_{m}"].double() for m in ("a", "v")}
    d_lf, d_agm = deltas(model, lf_model), deltas(model, agm_model)
    for m in ("a", "v"):
        for p in ("weight", "bias"):
            assert torch.allclose(d_agm[f"encoders.{m}.{p}"], k[m] * d_lf[f"encoders.{m}.{p}"], atol=1e-13)
    w_agm, w_lf = d_agm["fusion_head.weight"], d_lf["fusion_head.weight"]
    assert torch.allclose(w_agm[:, :2], k["a"] * w_lf[:, :2], atol=1e-13)
    assert torch.allclose(w_agm[:, 2:], k["v"] * w_lf[:, 2:], atol=1e-13)
    assert torch.allclose(d_agm["fusion_head.bias"], (k["a"] + k["v"]) / 2 * d_lf["fusion_head.bias"], atol=1e-13)


@pytest.mark.parametrize("task_type", ["multiclass", "multilabel"])
def test_without_modulation_agm_is_late_fusion(task_type):
    model, batch = tiny_model(), tiny_batch(task_type=task_type)
    lf_model, agm_model = copy.deepcopy(model), copy.deepcopy(model)
    METHODS["late_fusion"](lf_model, sgd(lf_model), task_type, lambda_m=0.0).step(batch)
    metrics = METHODS["agm"](agm_model, sgd(agm_model), task_type, alpha=0.0).step(batch)
    assert metrics["coeff_a"].item() == 1.0
    for pa, pb in zip(lf_model.parameters(), agm_model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-14)


def test_multilabel_contribution_loss_is_the_label_mean_bce():
    model, batch = tiny_model(), tiny_batch(task_type="multilabel")
    y = batch["y"].numpy()
    expected = {}
    for m, x in hand_slices(model, batch).items():
        p = 1 / (1 + np.exp(-x))
        expected[m] = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    metrics = METHODS["agm"](model, sgd(model), "multilabel").step(batch)
    for m in ("a", "v"):
        assert metrics[f"contribution_loss_{m}"].item() == pytest.approx(expected[m], rel=1e-12)


def test_state_round_trip_continues_identically():
    model, b1, b2 = tiny_model(), tiny_batch(seed=1), tiny_batch(seed=2)
    a_model = copy.deepcopy(model)
    a = METHODS["agm"](a_model, sgd(a_model, 0.1), "multiclass")
    a.step(b1)
    b_model = copy.deepcopy(a_model)
    b = METHODS["agm"](b_model, sgd(b_model, 0.1), "multiclass")
    b.load_state_dict(a.state_dict())
    ma, mb = a.step(b2), b.step(b2)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    for pa, pb in zip(a_model.parameters(), b_model.parameters(), strict=True):
        assert torch.equal(pa, pb)
