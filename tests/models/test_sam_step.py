"""SAM's step (Foret et al. 2021, Eqs. 2-3) beyond the two-pass update that test_masam_math checks by hand:
what it reports, what it refuses, and what it leaves behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clinfuse.models.methods import METHODS
from clinfuse.models.methods.sam import SAM
from tests.models.test_masam_math import batch, params_of, run_method, scalar_model

MODS = ["ehr", "cxr"]


def test_the_reported_perturbation_norm_is_rho():
    _, (metrics,) = run_method("sam", scalar_model(), MODS, rho=0.3)
    assert metrics["perturbation_norm"].item() == pytest.approx(0.3, abs=1e-9)  # ||rho g / ||g|| || = rho


def test_the_default_radius_is_the_papers_0_05():
    model = scalar_model()
    assert SAM(model, torch.optim.SGD(model.parameters(), lr=1.0), "binary").rho == 0.05


@pytest.mark.parametrize("rho", [-0.1, float("nan")])
def test_a_negative_or_missing_radius_is_refused_naming_rho(rho):
    model = scalar_model()
    with pytest.raises(ValueError, match=r"^rho must be in \[0, inf\)"):
        SAM(model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", rho=rho)


@pytest.mark.parametrize("method", ["sam", "masam"])  # both pass lambda_m on to the shared total loss
def test_the_unimodal_loss_weight_reaches_the_update(method):
    one, two = scalar_model(), scalar_model()
    run_method(method, one, MODS, rho=0.3, lambda_m=1.0)
    run_method(method, two, MODS, rho=0.3, lambda_m=2.0)
    a, b = params_of(one, MODS), params_of(two, MODS)
    assert any(abs(a[k] - b[k]) > 1e-6 for k in a)


def test_a_parameter_the_loss_never_reaches_is_left_alone_and_no_gradient_is_kept():
    model = scalar_model()
    model.unused = nn.Parameter(torch.tensor([0.7], dtype=torch.float64))  # e.g. a head this task never calls
    method = METHODS["sam"](model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", rho=0.3)
    method.step(batch(MODS))
    assert model.unused.item() == 0.7
    assert all(p.grad is None for p in model.parameters())  # no gradient memory held between steps


@pytest.mark.parametrize("method", ["sam", "masam"])
def test_each_gradient_is_averaged_over_ranks_once_per_pass(monkeypatch, method):
    # each method rank-averages its gradients in its own two collectives (SAM: g, then g_sharp; MASAM:
    # the encoders' g_f, g_u and the heads' gradients, then g'); averaging them again before the
    # optimizer step would be a second, wasted all-reduce of every parameter
    import importlib

    import clinfuse.models.methods.base as base

    calls = []
    monkeypatch.setattr(base, "average_gradients", lambda params: calls.append("average_gradients"))
    module = importlib.import_module(f"clinfuse.models.methods.{method}")
    monkeypatch.setattr(module, "all_reduce_mean_", lambda tensors: calls.append("all_reduce_mean_"))
    run_method(method, scalar_model(), MODS, rho=0.3)
    assert calls == ["all_reduce_mean_", "all_reduce_mean_"]
