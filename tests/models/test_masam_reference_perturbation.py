"""MASAM's reference-code perturbation on gradients small enough that every constant shows
(norms below 1, an exactly orthogonal tensor), and the options MASAM's constructor takes.

Reference variant (the released optimizer): per tensor, u = (<g_u, g_f> / ||g_f||^2) g_f where the
two agree (<g_u, g_f> >= 0) and u = g_f where they disagree; c = cos(g_f, g_u) of the LAST tensor
(c <= 0 -> 1; 1 with MDPS off); eps = rho c u / ||u||, ||u|| one norm over the whole encoder.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.models.methods import METHODS
from tests.models.test_masam_math import scalar_model

F64 = torch.float64


def reference(rho=0.5, **options):
    model = scalar_model()
    return METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary", rho=rho,
                            variant="reference", **options)


def tensors(*values):
    return [torch.tensor(v, dtype=F64) for v in values]


def test_an_orthogonal_tensor_projects_to_zero_and_a_small_one_scales_by_its_own_squared_norm():
    # tensor 0: <g_u, g_f> = 0.12 - 0.12 = 0 exactly -> u0 = 0 (the projection, not g_f itself);
    # tensor 1: <g_u, g_f> = 0.02, ||g_f||^2 = 0.01 -> u1 = 2 g_f1 = [0.2, 0]; ||u|| = 0.2;
    # c = cos(g_f1, g_u1) = 0.02 / (0.1 * sqrt(0.08)) = 1 / sqrt(2)
    g_f = tensors([0.3, 0.4], [0.1, 0.0])
    g_u = tensors([0.4, -0.3], [0.2, 0.2])
    eps = reference(rho=0.5)._perturbation(g_f, g_u, torch.tensor(0.0, dtype=F64))
    c = 1 / np.sqrt(2.0)
    np.testing.assert_allclose(eps[0].numpy(), [0.0, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(eps[1].numpy(), [0.5 * c * 0.2 / 0.2, 0.0], rtol=0, atol=1e-15)


def test_each_tensor_is_projected_with_its_own_squared_norm_before_the_one_normalisation():
    # tensor 0: <g_u, g_f> = 0.125, ||g_f||^2 = 0.25 -> u0 = 0.5 g_f0 = [0.15, 0.2];
    # tensor 1: <g_u, g_f> = 0.02, ||g_f||^2 = 0.01 -> u1 = 2 g_f1 = [0.2, 0];
    # ||u|| = sqrt(0.0225 + 0.04 + 0.04); c = cos(g_f1, g_u1) = 1 / sqrt(2)
    g_f = tensors([0.3, 0.4], [0.1, 0.0])
    g_u = tensors([0.15, 0.2], [0.2, 0.2])
    eps = reference(rho=0.5)._perturbation(g_f, g_u, torch.tensor(0.0, dtype=F64))
    scale = 0.5 * (1 / np.sqrt(2.0)) / np.sqrt(0.1025)
    np.testing.assert_allclose(eps[0].numpy(), np.array([0.15, 0.2]) * scale, rtol=0, atol=1e-15)
    np.testing.assert_allclose(eps[1].numpy(), np.array([0.2, 0.0]) * scale, rtol=0, atol=1e-15)


def test_a_last_tensor_orthogonal_to_its_unimodal_gradient_scales_by_one_not_zero():
    # tensor 0 agrees fully -> u0 = g_f0 = [0.3, 0.4] (||u|| = 0.5); tensor 1 is orthogonal -> u1 = 0
    # and cos = 0 exactly: c <= 0 gives c = 1, so eps = rho u / ||u||
    g_f = tensors([0.3, 0.4], [0.1, 0.0])
    g_u = tensors([0.3, 0.4], [0.0, 0.2])
    eps = reference(rho=0.5)._perturbation(g_f, g_u, torch.tensor(0.0, dtype=F64))
    np.testing.assert_allclose(eps[0].numpy(), [0.3, 0.4], rtol=0, atol=1e-15)  # 0.5 * [0.6, 0.8]
    np.testing.assert_allclose(eps[1].numpy(), [0.0, 0.0], rtol=0, atol=1e-15)


def test_the_reference_perturbation_without_mdps_has_length_rho():
    g_f = tensors([0.3, 0.4], [0.1, 0.0])
    g_u = tensors([0.4, -0.3], [0.2, 0.2])  # last-tensor cosine 1 / sqrt(2): ignored with MDPS off
    eps = reference(rho=0.5, mdps=False)._perturbation(g_f, g_u, torch.tensor(0.0, dtype=F64))
    np.testing.assert_allclose(eps[1].numpy(), [0.5, 0.0], rtol=0, atol=1e-15)
    assert eps[1].dtype == F64


def test_the_defaults_are_the_released_code_s_radius_alpha_and_beta():
    model = scalar_model()
    masam = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary")
    assert (masam.rho, masam.alpha, masam.beta) == (0.3, 0.5, 0.9)
    assert (masam.variant, masam.aps, masam.mdps, masam.dominant) == ("paper", True, True, None)
    assert (masam.score, masam.direction) == ("aps", "fusion")


@pytest.mark.parametrize("options,message", [
    ({"variant": "mine"}, r"^masam: variant must be one of \('paper', 'reference'\), got 'mine'$"),
    ({"dominant": "ecg"}, r"^masam: dominant 'ecg' is not one of \['ehr', 'cxr'\]$"),
    ({"score": "loss"}, r"^masam: score must be one of .*, got 'loss'$"),
    ({"direction": "up"}, r"^masam: direction must be one of .*, got 'up'$"),
    ({"variant": "reference", "direction": "orthogonal"},
     r"^masam: direction alternatives apply to variant 'paper' only$"),
])
def test_a_bad_option_is_refused_naming_it(options, message):
    model = scalar_model()
    with pytest.raises(ValueError, match=message):
        METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary", **options)


@pytest.mark.parametrize("options,message", [
    ({"rho": -0.1}, "rho must be in [0, inf) (got -0.1)"),
    ({"alpha": 1.5}, "alpha must be in [0, 1] (got 1.5)"),
    ({"alpha": -0.5}, "alpha must be in [0, 1] (got -0.5)"),
    ({"beta": 1.0}, "beta must be in [0, 1) (got 1.0)"),  # beta = 1 would freeze the moving average
    ({"beta": -0.1}, "beta must be in [0, 1) (got -0.1)"),
])
def test_the_radius_alpha_and_beta_are_refused_outside_their_ranges(options, message):
    model = scalar_model()
    with pytest.raises(ValueError) as error:
        METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary", **options)
    assert str(error.value) == message


def test_the_range_ends_that_are_allowed_are_accepted():
    model = scalar_model()
    masam = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary", rho=0.0, alpha=1.0, beta=0.0)
    assert (masam.rho, masam.alpha, masam.beta) == (0.0, 1.0, 0.0)
