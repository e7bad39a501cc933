"""MASAM's design alternatives (paper Table 8): scoring rules and perturbation directions, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.evaluation.comparison import design_alternatives
from clinfuse.evaluation.report import ReportData, render_report
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.masam import perturbation_direction
from tests.models.test_masam_math import F64, X, Y, params_of, run_method, scalar_model, sigmoid

MODS = ["ehr", "cxr"]


def vec(*values):
    return [torch.tensor(v, dtype=F64) for v in values]


def masam(**options):
    model = scalar_model()
    return METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", **options)


@pytest.mark.parametrize("direction,expected", [
    ("fusion", [3.0, 4.0, 0.0]),
    ("difference", [2.0, 2.0, -1.0]),  # g_f - g_u
    ("orthogonal", [1 - 1.32, 2 - 1.76, 1.0]),  # g_u - (<g_u, g_f> / |g_f|^2) g_f = g_u - (11 / 25) g_f
])
def test_each_direction_is_the_stated_vector_over_the_flattened_encoder(direction, expected):
    g_f, g_u = vec([3.0, 4.0], [0.0]), vec([1.0, 2.0], [1.0])
    u = torch.cat(perturbation_direction(g_f, g_u, direction)).numpy()
    assert np.allclose(u, expected, atol=1e-12)
    if direction == "orthogonal":
        assert u @ np.array([3.0, 4.0, 0.0]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("direction", ["fusion", "difference", "orthogonal"])
def test_perturbation_has_length_rho_gamma_along_its_direction(direction):
    g_f, g_u = vec([3.0, 4.0], [0.0]), vec([1.0, 2.0], [1.0])
    m = masam(rho=0.2, direction=direction)
    eps = torch.cat(m._perturbation(g_f, g_u, torch.tensor(-0.5, dtype=F64))).numpy()
    u = torch.cat(perturbation_direction(g_f, g_u, direction)).numpy()
    assert np.allclose(eps, 0.2 * -0.5 * u / np.linalg.norm(u), atol=1e-12)


def hand_step(p, rho, direction):
    """One paper-MASAM step with a Table 8 direction (first step, APS = (1 - alpha) gamma), SGD lr = 1."""
    x = {m: X[m].numpy()[:, 0] for m in MODS}
    y = Y.numpy()[:, 0]
    n = len(y)
    z = {m: p[f"a_{m}"] * x[m] + p[f"c_{m}"] for m in MODS}
    f = sum(p[f"W_{m}"] * z[m] for m in MODS) + p["b"]
    u = {m: p[f"v_{m}"] * z[m] + p[f"e_{m}"] for m in MODS}
    r_f, r_u = (sigmoid(f) - y) / n, {m: (sigmoid(u[m]) - y) / n for m in MODS}
    g_f = {m: np.array([np.sum(r_f * p[f"W_{m}"] * x[m]), np.sum(r_f * p[f"W_{m}"])]) for m in MODS}
    g_u = {m: np.array([np.sum(r_u[m] * p[f"v_{m}"] * x[m]), np.sum(r_u[m] * p[f"v_{m}"])]) for m in MODS}
    gamma = {m: g_f[m] @ g_u[m] / (np.linalg.norm(g_f[m]) * np.linalg.norm(g_u[m])) for m in MODS}
    d = max(MODS, key=gamma.get)
    v = {"fusion": g_f[d], "difference": g_f[d] - g_u[d],
         "orthogonal": g_u[d] - (g_u[d] @ g_f[d]) / (g_f[d] @ g_f[d]) * g_f[d]}[direction]
    eps = rho * gamma[d] * v / np.linalg.norm(v)
    z_d = (p[f"a_{d}"] + eps[0]) * x[d] + (p[f"c_{d}"] + eps[1])
    r_fp = (sigmoid(f - p[f"W_{d}"] * z[d] + p[f"W_{d}"] * z_d) - y) / n
    g_sharp = np.array([np.sum(r_fp * p[f"W_{d}"] * x[d]), np.sum(r_fp * p[f"W_{d}"])])
    grads = {}
    for m in MODS:
        grads[f"a_{m}"], grads[f"c_{m}"] = (g_sharp if m == d else g_f[m]) + g_u[m]
        grads[f"W_{m}"], grads[f"v_{m}"], grads[f"e_{m}"] = np.sum(r_f * z[m]), np.sum(r_u[m] * z[m]), np.sum(r_u[m])
    grads["b"] = np.sum(r_f)
    return {k: p[k] - grads[k] for k in p}


@pytest.mark.parametrize("direction", ["difference", "orthogonal"])
def test_a_step_with_an_alternative_direction_matches_hand_computation(direction):
    model = scalar_model()
    expected = hand_step(params_of(model, MODS), rho=0.8, direction=direction)
    run_method("masam", model, MODS, rho=0.8, direction=direction)
    got = params_of(model, MODS)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_gamma_only_score_is_aps_with_alpha_zero():
    a, b = scalar_model(), scalar_model()
    _, ma = run_method("masam", a, MODS, steps=3, rho=0.5, score="gamma")
    _, mb = run_method("masam", b, MODS, steps=3, rho=0.5, alpha=0.0)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert ma[-1]["aps_ehr"].item() == ma[-1]["gamma_ehr"].item()


def test_ogm_score_picks_the_modality_whose_head_is_more_often_right():
    model = scalar_model()
    p = params_of(model, MODS)
    y = Y.numpy()[:, 0]
    score = {}
    for m in MODS:
        prob = sigmoid(p[f"v_{m}"] * (p[f"a_{m}"] * X[m].numpy()[:, 0] + p[f"c_{m}"]) + p[f"e_{m}"])
        score[m] = np.mean(y * prob + (1 - y) * (1 - prob))
    _, (metrics,) = run_method("masam", model, MODS, rho=0.5, score="ogm")
    for m in MODS:
        assert metrics[f"aps_{m}"].item() == pytest.approx(score[m], abs=1e-12)
    assert MODS[int(metrics["dominant"])] == max(score, key=score.get)


def test_unknown_options_and_reference_with_a_direction_are_refused():
    with pytest.raises(ValueError, match="score"):
        masam(score="loss")
    with pytest.raises(ValueError, match="direction"):
        masam(direction="random")
    with pytest.raises(ValueError, match="paper"):
        masam(variant="reference", direction="orthogonal")


def comparison_row(method, mean):
    return {"method": method, "n_seeds": 2, "headline_mean": mean, "headline_std": 0.01, "auroc_mean": 0.7,
            "auroc_std": 0.01, "rank_auprc": 1.5, "rank_auroc": 1.5}


def test_design_block_lists_masam_then_its_alternatives_with_differences():
    rows = [comparison_row(m, v) for m, v in
            [("late_fusion", 0.40), ("masam_dir_orthogonal", 0.41), ("masam", 0.45), ("masam_score_ogm", 0.43)]]
    block = design_alternatives(rows)
    assert [r["method"] for r in block] == ["masam", "masam_score_ogm", "masam_dir_orthogonal"]
    assert [round(r["delta"], 6) for r in block] == [0.0, -0.02, -0.04]
    assert design_alternatives(rows[:1] + rows[2:3]) == []  # masam alone: no block
    assert design_alternatives([r for r in rows if r["method"] != "masam"]) == []


def test_report_shows_the_design_block_only_when_alternatives_were_run():
    rows = [comparison_row("masam", 0.45), comparison_row("masam_gamma_only", 0.44)]
    data = ReportData(title="t", dataset="mimic", task="phenotype", task_type="multilabel",
                      headline_metric="macro_auprc", methods=["masam", "masam_gamma_only"], cohort_counts={},
                      exclusions=[], prevalence={}, label_rows=[], excluded_labels=[], comparison=rows,
                      paired_difference=None, calibration=[], subgroups=[], n_resamples=1000)
    assert 'id="design-alternatives"' not in render_report(data)
    data.design_alternatives = design_alternatives(rows)
    html = render_report(data)
    assert 'id="design-alternatives"' in html and "-0.010" in html and "gradient alignment only" in html


def test_reference_variant_cosines_are_per_tensor_and_scale_free():
    # the released optimizer's cosines: one per parameter tensor, whatever the gradients' size
    a = [torch.tensor([0.1, 0.0]), torch.tensor([0.0, 0.003])]
    b = [torch.tensor([0.2, 0.0]), torch.tensor([0.004, 0.0])]
    assert METHODS["masam"]._per_tensor_cosines(a, b).tolist() == [1.0, 0.0]
    zero = [torch.zeros(2)]
    assert METHODS["masam"]._per_tensor_cosines(zero, zero).tolist() == [0.0]  # no direction: 0, not NaN
