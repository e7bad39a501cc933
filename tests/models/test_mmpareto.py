"""MMPareto pinned to hand computation: MinNorm weights, magnitude rescale, one step on a scalar model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.models.methods import METHODS
from clinfuse.models.methods.mmpareto import min_norm_two
from tests.models.test_masam_math import F64, X, Y, batch, params_of, scalar_model, sigmoid


def vec(*values):
    return [torch.tensor(v, dtype=F64) for v in values]


def method(model, **options):
    return METHODS["mmpareto"](model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", **options)


def test_minnorm_weights_of_two_conflicting_vectors_match_the_closed_form():
    # g1 = (1, 0), g2 = (-1, 1), split over two tensors: c1 = (g2.g2 - g1.g2) / |g1 - g2|^2 = 3 / 5
    c1, c2 = min_norm_two(vec([1.0], [0.0]), vec([-1.0], [1.0]))
    assert c1.item() == pytest.approx(0.6, abs=1e-12) and c2.item() == pytest.approx(0.4, abs=1e-12)
    # the min-norm point (0.2, 0.4) is orthogonal to g1 - g2 = (2, -1)
    point = 0.6 * np.array([1.0, 0.0]) + 0.4 * np.array([-1.0, 1.0])
    assert point @ np.array([2.0, -1.0]) == pytest.approx(0.0, abs=1e-12)


def test_conflicting_gradients_get_minnorm_weights_rescaled_to_the_summed_magnitude():
    m = method(scalar_model(), scale=1.5)
    h, cos, c_mm, c_u = m.integrate(vec([1.0, 0.0]), vec([-1.0, 1.0]))
    assert cos.item() == pytest.approx(-1 / np.sqrt(2), abs=1e-12)
    assert (c_mm.item(), c_u.item()) == pytest.approx((0.6, 0.4), abs=1e-12)
    # 2 (0.6 g1 + 0.4 g2) = (0.4, 0.8), shorter than g1 + g2 = (0, 1): scaled to norm 1, then x 1.5
    expected = np.array([0.4, 0.8]) / np.sqrt(0.8) * 1.5
    assert np.allclose(h[0].numpy(), expected, atol=1e-12)


def test_agreeing_gradients_get_equal_weights_and_their_sum():
    m = method(scalar_model())
    h, cos, c_mm, c_u = m.integrate(vec([1.0, 0.0]), vec([1.0, 2.0]))
    assert cos.item() > 0 and c_mm.item() == 0.5 and c_u.item() == 0.5
    assert np.allclose(h[0].numpy(), [2.0, 2.0], atol=1e-12)


def hand_mmpareto_step(p, mods, lam=1.0, scale=1.0):
    """One MMPareto step on the scalar model, written out with numpy (SGD, lr = 1)."""
    x = {m: X[m].numpy()[:, 0] for m in mods}
    y = Y.numpy()[:, 0]
    n = len(y)
    z = {m: p[f"a_{m}"] * x[m] + p[f"c_{m}"] for m in mods}
    f = sum(p[f"W_{m}"] * z[m] for m in mods) + p["b"]
    u = {m: p[f"v_{m}"] * z[m] + p[f"e_{m}"] for m in mods}
    r_f = (sigmoid(f) - y) / n
    r_u = {m: (sigmoid(u[m]) - y) / n for m in mods}
    grads, cosines, weights = {}, {}, {}
    for m in mods:
        g_mm = np.array([np.sum(r_f * p[f"W_{m}"] * x[m]), np.sum(r_f * p[f"W_{m}"])])
        g_u = lam * np.array([np.sum(r_u[m] * p[f"v_{m}"] * x[m]), np.sum(r_u[m] * p[f"v_{m}"])])
        cos = g_mm @ g_u / (np.linalg.norm(g_mm) * np.linalg.norm(g_u))
        if cos > 0:
            c = 0.5
        else:
            c = np.clip((g_u @ g_u - g_mm @ g_u) / np.sum((g_mm - g_u) ** 2), 0, 1)
        h = 2 * (c * g_mm + (1 - c) * g_u)
        total = np.linalg.norm(g_mm + g_u)
        if np.linalg.norm(h) < total:
            h = h * total / np.linalg.norm(h)
        grads[f"a_{m}"], grads[f"c_{m}"] = scale * h
        grads[f"W_{m}"] = np.sum(r_f * z[m])
        grads[f"v_{m}"] = lam * np.sum(r_u[m] * z[m])
        grads[f"e_{m}"] = lam * np.sum(r_u[m])
        cosines[m], weights[m] = cos, c
    grads["b"] = np.sum(r_f)
    return {k: p[k] - grads[k] for k in p}, cosines, weights


@pytest.mark.parametrize("n_modalities,scale", [(2, 1.0), (3, 1.5)])
def test_mmpareto_step_matches_hand_computation(n_modalities, scale):
    mods = ["ehr", "cxr", "mri"][:n_modalities]
    model = scalar_model(n_modalities)
    expected, cosines, weights = hand_mmpareto_step(params_of(model, mods), mods, scale=scale)
    assert any(c <= 0 for c in cosines.values()), "fixture should have a conflicting modality"
    metrics = method(model, scale=scale).step(batch(mods))
    got = params_of(model, mods)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key
    for m in mods:
        assert metrics[f"cos_{m}"].item() == pytest.approx(cosines[m], abs=1e-9)
        assert metrics[f"weight_mm_{m}"].item() == pytest.approx(weights[m], abs=1e-9)
        assert metrics[f"weight_uni_{m}"].item() == pytest.approx(1 - weights[m], abs=1e-9)
        assert metrics[f"conflict_{m}"].item() == float(cosines[m] <= 0)


def test_mmpareto_switched_off_is_late_fusion():
    mods = ["ehr", "cxr"]
    a, b = scalar_model(), scalar_model()
    m = method(a, pareto=False)
    late = METHODS["late_fusion"](b, torch.optim.SGD(b.parameters(), lr=1.0), "binary")
    for _ in range(3):
        m.step(batch(mods))
        late.step(batch(mods))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-12, rtol=0), name


def test_mmpareto_has_no_state_to_resume():
    assert method(scalar_model()).state_dict() == {}
