"""OGM-GE (Peng et al., CVPR 2022) checked by hand on a float64 linear model."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from clinfuse.models.methods import METHODS
from clinfuse.models.methods.modality_scores import match_score
from tests.models.tiny_fusion import deltas, numpy_params, sgd, softmax, tiny_batch, tiny_model


def hand_scores(model, batch, task_type):
    """Slice logits W_m z_m + b/M -> per-modality mean score, in numpy."""
    enc, w, b = numpy_params(model)
    mods = list(model.modalities)
    y = batch["y"].numpy()
    scores, start = {}, 0
    for m in mods:
        a, c = enc[m]
        z = batch["inputs"][m].numpy() @ a.T + c
        s = z @ w[:, start : start + z.shape[1]].T + b / len(mods)
        start += z.shape[1]
        if task_type == "multiclass":
            per = softmax(s)[np.arange(len(y)), y]
        else:
            p = 1 / (1 + np.exp(-s))
            per = (y * p + (1 - y) * (1 - p)).sum(1)
        scores[m] = per.mean()
    return scores


def run_step(name, model, batch, task_type="multiclass", seed=7, **options):
    torch.manual_seed(seed)
    method = METHODS[name](model, sgd(model), task_type, **options)
    return method, method.step(batch)


@pytest.mark.parametrize("task_type", ["multiclass", "multilabel"])
def test_scores_ratio_and_coefficient_are_the_papers_equations(task_type):
    model, batch = tiny_model(), tiny_batch(task_type=task_type)
    scores = hand_scores(model, batch, task_type)
    rho_a = scores["a"] / scores["v"]
    expected_k = {"a": 1 - math.tanh(0.8 * rho_a) if rho_a > 1 else 1.0,
                  "v": 1 - math.tanh(0.8 / rho_a) if rho_a < 1 else 1.0}
    _, metrics = run_step("ogm_ge", model, batch, task_type, alpha=0.8)
    assert metrics["score_a"].item() == pytest.approx(scores["a"], rel=1e-12)
    assert metrics["ratio_a"].item() == pytest.approx(rho_a, rel=1e-12)
    assert metrics["ratio_v"].item() == pytest.approx(1 / rho_a, rel=1e-12)
    for m in ("a", "v"):
        assert metrics[f"coeff_{m}"].item() == pytest.approx(expected_k[m], rel=1e-12)
    assert min(expected_k.values()) < 1 == max(expected_k.values())  # exactly one modality is slowed


def test_the_binary_score_is_the_probability_of_the_true_outcome():
    logits = torch.tensor([[2.0], [-1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    p = torch.sigmoid(logits).squeeze(1)
    assert torch.allclose(match_score(logits, y, "binary"), p)
    assert torch.allclose(match_score(logits, 1 - y, "binary"), 1 - p)


def test_ogm_scales_each_encoders_gradient_by_its_coefficient_and_leaves_the_head_alone():
    model, batch = tiny_model(), tiny_batch()
    lf_model, ogm_model = copy.deepcopy(model), copy.deepcopy(model)
    run_step("late_fusion", lf_model, batch, lambda_m=0.0)
    _, metrics = run_step("ogm_ge", ogm_model, batch, alpha=0.8, ge=False)
    d_lf, d_ogm = deltas(model, lf_model), deltas(model, ogm_model)
    for name in d_lf:
        k = metrics["coeff_a"] if name.startswith("encoders.a") else (
            metrics["coeff_v"] if name.startswith("encoders.v") else torch.tensor(1.0))
        assert torch.allclose(d_ogm[name], k.double() * d_lf[name], atol=1e-14), name


def test_ge_adds_gaussian_noise_with_the_gradients_own_std():
    model, batch = tiny_model(), tiny_batch()
    lf_model, ogm_model = copy.deepcopy(model), copy.deepcopy(model)
    run_step("late_fusion", lf_model, batch, lambda_m=0.0)
    _, metrics = run_step("ogm_ge", ogm_model, batch, seed=11, alpha=0.8, ge=True)
    grads = {n: -d for n, d in deltas(model, lf_model).items()}  # lr 1: delta = -grad
    torch.manual_seed(11)  # the step draws its noise in modality, then parameter order
    for m in ("a", "v"):
        for p in ("weight", "bias"):
            g = grads[f"encoders.{m}.{p}"]
            eps = torch.randn_like(g)
            std = float(np.std(g.numpy(), ddof=1))
            expected = metrics[f"coeff_{m}"].double() * g + (std + 1e-8) * eps
            got = -(dict(ogm_model.named_parameters())[f"encoders.{m}.{p}"] - dict(model.named_parameters())[
                f"encoders.{m}.{p}"]).detach()
            assert torch.allclose(got, expected, atol=1e-12), (m, p)


@pytest.mark.parametrize("lambda_m", [0.0, 1.0])
def test_without_modulation_ogm_ge_is_late_fusion(lambda_m):
    model, batch = tiny_model(), tiny_batch()
    lf_model, ogm_model = copy.deepcopy(model), copy.deepcopy(model)
    run_step("late_fusion", lf_model, batch, lambda_m=lambda_m)
    run_step("ogm_ge", ogm_model, batch, alpha=0.0, ge=False, lambda_m=lambda_m)
    for pa, pb in zip(lf_model.parameters(), ogm_model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_outside_the_modulation_window_the_step_is_late_fusion():
    model, batch = tiny_model(), tiny_batch()
    lf_model, ogm_model = copy.deepcopy(model), copy.deepcopy(model)
    run_step("late_fusion", lf_model, batch, lambda_m=0.0)
    torch.manual_seed(7)
    method = METHODS["ogm_ge"](ogm_model, sgd(ogm_model), "multiclass", alpha=0.8, modulation_ends=2)
    assert method.on_epoch_start(3, None) == {}
    method.step(batch)
    for pa, pb in zip(lf_model.parameters(), ogm_model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_three_modalities_compare_each_score_with_the_mean_of_the_others():
    mods = ("a", "v", "t")
    model, batch = tiny_model(mods), tiny_batch(mods)
    s = hand_scores(model, batch, "multiclass")
    _, metrics = run_step("ogm_ge", model, batch, alpha=0.5, ge=False)
    for m in mods:
        rho = s[m] / np.mean([s[j] for j in mods if j != m])
        assert metrics[f"ratio_{m}"].item() == pytest.approx(rho, rel=1e-12)
        assert metrics[f"coeff_{m}"].item() == pytest.approx(1 - math.tanh(0.5 * rho) if rho > 1 else 1.0, rel=1e-12)


def test_a_batch_without_one_modality_is_not_modulated():
    model, batch = tiny_model(), tiny_batch(present={"a": torch.ones(4, dtype=torch.bool),
                                                     "v": torch.zeros(4, dtype=torch.bool)})
    _, metrics = run_step("ogm_ge", model, batch, alpha=0.8)
    assert metrics["coeff_a"].item() == 1.0 and metrics["coeff_v"].item() == 1.0


def test_state_round_trip_keeps_the_epoch():
    model = tiny_model()
    a = METHODS["ogm_ge"](model, sgd(model), "multiclass")
    a.on_epoch_start(5, None)
    b = METHODS["ogm_ge"](model, sgd(model), "multiclass")
    b.load_state_dict(a.state_dict())
    assert b.epoch == 5 and b.in_window()
