"""Flatness estimators against hand-computed Hessians (PyHessian / Li et al. 2018 definitions)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from clinfuse.evaluation.flatness import (
    filter_normalized_direction,
    hutchinson_trace,
    landscape_1d,
    landscape_2d,
    top_eigenvalue,
)


def quadratic(a: np.ndarray):
    """L(w) = 1/2 w^T A w with symmetric A: the Hessian is A everywhere."""
    A = torch.tensor(a, dtype=torch.float64)
    w = torch.randn(len(a), dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    return w, (lambda: [0.5 * w @ A @ w])


def test_hutchinson_mean_is_within_three_standard_errors_of_the_exact_trace():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(6, 6))
    a = b @ b.T + np.diag([1.0, 2, 3, 4, 5, 6])
    w, terms = quadratic(a)
    r = hutchinson_trace(terms, [w], n_vectors=400, generator=torch.Generator().manual_seed(3))
    assert r["n_vectors"] == 400 and r["n_params"] == 6
    assert abs(r["trace"] - np.trace(a)) <= 3 * r["se"]
    assert r["se"] > 0


def test_hutchinson_with_the_full_rademacher_basis_on_two_parameters_is_exact():
    a = np.array([[3.0, 1.5], [1.5, -0.5]])
    w, terms = quadratic(a)
    basis = [[torch.tensor(s, dtype=torch.float64)] for s in itertools.product([-1.0, 1.0], repeat=2)]
    r = hutchinson_trace(terms, [w], vectors=basis)
    # v^T A v = a11 + a22 + 2 s1 s2 a12: 2.5 - 3 for opposite signs, 2.5 + 3 for equal signs
    assert sorted(r["samples"]) == [-0.5, -0.5, 5.5, 5.5]
    assert r["trace"] == 2.5


def test_power_iteration_finds_the_largest_magnitude_eigenvalue():
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(5, 5)))
    a = q @ np.diag([7.0, 3.0, 1.0, -0.5, 0.2]) @ q.T
    w, terms = quadratic((a + a.T) / 2)
    r = top_eigenvalue(terms, [w], iters=200, tol=1e-10)
    assert abs(r["eigenvalue"] - 7.0) < 1e-6
    assert r["converged"]


def test_hessian_of_a_block_is_the_diagonal_block_of_the_full_hessian():
    a = np.array([[2.0, 1.0], [1.0, 4.0]])
    A = torch.tensor(a)
    u = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([-0.7], dtype=torch.float64, requires_grad=True)

    def terms():
        w = torch.cat([u, v])
        return [0.5 * w @ A @ w]

    basis = [[torch.tensor([s], dtype=torch.float64)] for s in (-1.0, 1.0)]
    assert hutchinson_trace(terms, [v], vectors=basis)["trace"] == 4.0


def test_a_filter_normalised_direction_has_each_filters_norm_equal_to_the_weights_filter_norm():
    conv = torch.nn.Conv2d(3, 5, 3)
    lin = torch.nn.Linear(4, 6)
    params = [conv.weight, conv.bias, lin.weight, lin.bias]
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    for p, di in zip(params, d, strict=True):
        assert di.shape == p.shape
        if p.dim() <= 1:
            assert torch.count_nonzero(di) == 0
        else:
            torch.testing.assert_close(di.reshape(len(di), -1).norm(dim=1), p.detach().reshape(len(p), -1).norm(dim=1))


def test_the_same_seed_gives_the_same_direction_for_two_networks_of_one_shape_up_to_their_scale():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    with torch.no_grad():
        b.weight.copy_(a.weight * 2)
    da = filter_normalized_direction([a.weight], torch.Generator().manual_seed(5))[0]
    db = filter_normalized_direction([b.weight], torch.Generator().manual_seed(5))[0]
    torch.testing.assert_close(db, 2 * da)


def test_the_2d_landscape_at_the_origin_is_the_models_loss_and_parameters_are_restored():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]

    def loss():
        return torch.nn.functional.mse_loss(model(x), y)

    g = torch.Generator().manual_seed(0)
    d1, d2 = filter_normalized_direction(params, g), filter_normalized_direction(params, g)
    grid = landscape_2d(loss, params, d1, d2, [-1.0, 0.0, 1.0], [-0.5, 0.0, 0.5])
    assert grid.shape == (3, 3)
    assert grid[1, 1] == float(loss().detach())
    assert grid[0, 0] != grid[1, 1]
    line = landscape_1d(loss, params, d1, [0.0, 1.0])
    assert line[0] == float(loss().detach()) and line[1] == grid[2, 1]
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.detach(), b)
