"""MASAM pinned to hand computation on a model with 2 parameters per encoder.

Encoder m is z_m = a_m x_m + c_m (scalar feature); unimodal head u_m = v_m z_m + e_m;
fusion head f = sum_m W_m z_m + b; binary task, BCE. With SGD(lr=1) the update is
the negative gradient, so every quantity of the MASAM step (docs/methods.md) can be written out.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from clinfuse.models.fusion import FusionModel
from clinfuse.models.methods import METHODS
from tests.models.tiny_fusion import ScalarEncoder

F64 = torch.float64  # exact comparisons to 1e-6 need double precision (set per tensor, not globally)


def scalar_model(n_modalities: int = 2) -> FusionModel:
    init = [(0.8, -0.3), (-0.5, 0.4), (1.2, 0.1)]
    mods = ["ehr", "cxr", "mri"][:n_modalities]
    model = FusionModel({m: ScalarEncoder(*init[i]) for i, m in enumerate(mods)}, num_outputs=1).double()
    with torch.no_grad():
        for i, m in enumerate(mods):
            model.unimodal_heads[m].weight.fill_(0.7 - 0.4 * i)
            model.unimodal_heads[m].bias.fill_(0.05 * (i + 1))
        model.fusion_head.weight.copy_(torch.tensor([[0.9, -0.6, 0.3][:n_modalities]], dtype=F64))
        model.fusion_head.bias.fill_(-0.1)
    return model


X = {
    "ehr": torch.tensor([[0.5], [-1.0], [2.0], [0.3]], dtype=F64),
    "cxr": torch.tensor([[1.5], [0.2], [-0.7], [1.1]], dtype=F64),
    "mri": torch.tensor([[-0.4], [0.9], [0.6], [-1.3]], dtype=F64),
}
Y = torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=F64)


def batch(mods):
    return {
        "inputs": {m: X[m] for m in mods},
        "present": {m: torch.ones(4, dtype=torch.bool) for m in mods},
        "y": Y,
    }


def sigmoid(t):
    return 1 / (1 + np.exp(-t))


def params_of(model, mods):
    """Plain numpy copies of every parameter."""
    p = {}
    for i, m in enumerate(mods):
        p[f"a_{m}"] = model.encoders[m].a.item()
        p[f"c_{m}"] = model.encoders[m].c.item()
        p[f"v_{m}"] = model.unimodal_heads[m].weight.item()
        p[f"e_{m}"] = model.unimodal_heads[m].bias.item()
        p[f"W_{m}"] = model.fusion_head.weight[0, i].item()
    p["b"] = model.fusion_head.bias.item()
    return p


def hand_masam_step(p, mods, rho, alpha, lam=1.0, mdps=True, dominant=None):
    """One paper-MASAM step (first step: Decay = 0) written out with numpy; `dominant` forces d."""
    x = {m: X[m].numpy()[:, 0] for m in mods}
    y = Y.numpy()[:, 0]
    n = len(y)
    z = {m: p[f"a_{m}"] * x[m] + p[f"c_{m}"] for m in mods}
    f = sum(p[f"W_{m}"] * z[m] for m in mods) + p["b"]
    u = {m: p[f"v_{m}"] * z[m] + p[f"e_{m}"] for m in mods}
    r_f = (sigmoid(f) - y) / n  # dL_fuse/df per sample
    r_u = {m: (sigmoid(u[m]) - y) / n for m in mods}
    g_f = {m: np.array([np.sum(r_f * p[f"W_{m}"] * x[m]), np.sum(r_f * p[f"W_{m}"])]) for m in mods}
    g_u = {m: np.array([np.sum(r_u[m] * p[f"v_{m}"] * x[m]), np.sum(r_u[m] * p[f"v_{m}"])]) for m in mods}
    gamma = {m: g_f[m] @ g_u[m] / (np.linalg.norm(g_f[m]) * np.linalg.norm(g_u[m])) for m in mods}
    aps = {m: alpha * 0.0 + (1 - alpha) * gamma[m] for m in mods}
    d = dominant or max(mods, key=lambda m: aps[m])
    scale = gamma[d] if mdps else 1.0
    eps = rho * scale * g_f[d] / np.linalg.norm(g_f[d])
    z_d = (p[f"a_{d}"] + eps[0]) * x[d] + (p[f"c_{d}"] + eps[1])
    f_p = f - p[f"W_{d}"] * z[d] + p[f"W_{d}"] * z_d
    r_fp = (sigmoid(f_p) - y) / n
    g_sharp = np.array([np.sum(r_fp * p[f"W_{d}"] * x[d]), np.sum(r_fp * p[f"W_{d}"])])
    grads = {}
    for m in mods:
        enc = (g_sharp if m == d else g_f[m]) + lam * g_u[m]
        grads[f"a_{m}"], grads[f"c_{m}"] = enc
        grads[f"W_{m}"] = np.sum(r_f * z[m])
        grads[f"v_{m}"] = lam * np.sum(r_u[m] * z[m])
        grads[f"e_{m}"] = lam * np.sum(r_u[m])
    grads["b"] = np.sum(r_f)
    new = {k: p[k] - grads[k] for k in p}  # SGD, lr = 1
    return new, gamma, aps, d, eps


def run_method(name, model, mods, steps=1, **options):
    method = METHODS[name](model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", **options)
    metrics = [method.step(batch(mods)) for _ in range(steps)]
    return method, metrics


@pytest.mark.parametrize("rho,alpha,lam", [(0.5, 0.5, 1.0), (2.0, 0.3, 1.0), (0.5, 0.5, 0.4)])
def test_masam_step_matches_hand_computation(rho, alpha, lam):
    # lam: lambda_m weighs g_u,m in every encoder's update (step 6) and the unimodal heads' gradients
    mods = ["ehr", "cxr"]
    model = scalar_model()
    expected, gamma, aps, d, eps = hand_masam_step(params_of(model, mods), mods, rho, alpha, lam=lam)
    _, (metrics,) = run_method("masam", model, mods, rho=rho, alpha=alpha, lambda_m=lam)
    got = params_of(model, mods)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    for m in mods:
        assert metrics[f"gamma_{m}"].item() == pytest.approx(gamma[m], abs=1e-6)
        assert metrics[f"aps_{m}"].item() == pytest.approx(aps[m], abs=1e-6)
    assert mods[int(metrics["dominant"])] == d
    assert metrics["perturbation_norm"].item() == pytest.approx(np.linalg.norm(eps), abs=1e-6)


def test_second_step_uses_moving_average_decay():
    mods = ["ehr", "cxr"]
    model = scalar_model()
    beta, alpha = 0.9, 0.5
    method, (m1, m2) = run_method("masam", model, mods, steps=2, rho=0.1, alpha=alpha, beta=beta)
    for m in mods:
        l1, l2 = m1[f"loss_{m}"].item(), m2[f"loss_{m}"].item()
        ma = beta * l1 + (1 - beta) * l2
        decay = max(0.0, l1 - ma)
        assert m2[f"decay_{m}"].item() == pytest.approx(decay, abs=1e-9)
        assert m2[f"aps_{m}"].item() == pytest.approx(alpha * decay + (1 - alpha) * m2[f"gamma_{m}"].item(), abs=1e-9)
        assert method.moving_average[mods.index(m)].item() == pytest.approx(ma, abs=1e-9)


def test_masam_with_rho_zero_equals_late_fusion_exactly():
    mods = ["ehr", "cxr"]
    a, b = scalar_model(), scalar_model()
    run_method("masam", a, mods, steps=3, rho=0.0)
    run_method("late_fusion", b, mods, steps=3)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-12, rtol=0), name


def test_mdps_off_replaces_gamma_by_one():
    mods = ["ehr", "cxr"]
    model = scalar_model()
    expected, *_ = hand_masam_step(params_of(model, mods), mods, rho=0.5, alpha=0.5, mdps=False)
    _, (metrics,) = run_method("masam", model, mods, rho=0.5, alpha=0.5, mdps=False)
    assert metrics["perturbation_norm"].item() == pytest.approx(0.5, abs=1e-12)
    got = params_of(model, mods)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key


def test_dominant_modality_is_argmax_over_three_modalities():
    mods = ["ehr", "cxr", "mri"]
    model = scalar_model(3)
    expected, gamma, aps, d, _ = hand_masam_step(params_of(model, mods), mods, rho=0.3, alpha=0.5)
    _, (metrics,) = run_method("masam", model, mods, rho=0.3, alpha=0.5)
    assert mods[int(metrics["dominant"])] == d == max(aps, key=aps.get)
    got = params_of(model, mods)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key


def test_negative_gamma_reverses_the_paper_perturbation_and_is_counted():
    mods = ["ehr", "cxr"]
    model = scalar_model()
    _, gamma, *_ = hand_masam_step(params_of(model, mods), mods, rho=0.5, alpha=0.5)
    negative = [m for m in mods if gamma[m] < 0]
    assert negative, "fixture should have a modality with a negative cosine"
    _, (metrics,) = run_method("masam", model, mods, rho=0.5, alpha=0.5, dominant=negative[0])
    assert metrics["negative_gamma"].item() == 1.0


def test_negative_gamma_dominant_modality_takes_the_reversed_step_through_the_real_update():
    # Paper Eq. 10 taken literally: eps = rho gamma_d g_f,d / ||g_f,d|| points AGAINST g_f,d when
    # gamma_d < 0, so g' is evaluated at theta_d - rho |gamma_d| g_f,d / ||g_f,d||.
    mods = ["ehr", "cxr"]
    model = scalar_model()
    p = params_of(model, mods)
    _, gamma, *_ = hand_masam_step(p, mods, rho=0.5, alpha=0.5)
    negative = next(m for m in mods if gamma[m] < 0)
    expected, gamma, _, d, eps = hand_masam_step(p, mods, rho=0.5, alpha=0.5, dominant=negative)
    # what a perturbation of +rho |gamma_d| along g_f,d (not reversed) would give instead
    not_reversed, *_ = hand_masam_step(p, mods, rho=-0.5, alpha=0.5, dominant=negative)
    _, (metrics,) = run_method("masam", model, mods, rho=0.5, alpha=0.5, dominant=negative)
    got = params_of(model, mods)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key
    assert got[f"a_{d}"] != pytest.approx(not_reversed[f"a_{d}"], abs=1e-6)
    assert metrics["perturbation_norm"].item() == pytest.approx(np.linalg.norm(eps), abs=1e-12)
    assert np.linalg.norm(eps) == pytest.approx(0.5 * abs(gamma[d]), abs=1e-12)
    assert metrics["negative_gamma"].item() == 1.0 and mods[int(metrics["dominant"])] == negative


def test_reference_gamma_is_mean_of_per_tensor_cosines():
    model = scalar_model()
    paper = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary")
    ref = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary", variant="reference")
    g_f = [torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0, 2.0, 0.0], dtype=F64)]
    g_u = [torch.tensor([1.0, 1.0], dtype=F64), torch.tensor([0.0, -1.0, 1.0], dtype=F64)]
    flat = (1.0 + 0.0 - 2.0) / (np.sqrt(5.0) * 2.0)
    per_tensor_mean = (1 / np.sqrt(2) + (-2.0 / (2.0 * np.sqrt(2)))) / 2
    assert paper._gamma(g_f, g_u).item() == pytest.approx(flat, abs=1e-12)
    assert ref._gamma(g_f, g_u).item() == pytest.approx(per_tensor_mean, abs=1e-12)


def test_reference_perturbation_never_reverses_and_uses_last_tensor_cosine():
    model = scalar_model()
    rho = 0.2
    paper = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary", rho=rho)
    ref = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary", rho=rho, variant="reference")
    g_f = [torch.tensor([3.0, 4.0], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)]
    g_u = [torch.tensor([-3.0, -4.0], dtype=F64), torch.tensor([1.0, 1.0], dtype=F64)]  # tensor 0 disagrees, 1 agrees
    gamma = torch.tensor(-0.5, dtype=F64)
    eps_paper = paper._perturbation(g_f, g_u, gamma)
    # paper: rho * gamma * g_f / ||g_f|| over the flattened encoder: reversed by gamma < 0
    scale = rho * -0.5 / np.sqrt(26.0)
    assert torch.allclose(eps_paper[0], torch.tensor([3.0, 4.0], dtype=F64) * scale)
    # reference: u = g_f on tensor 0 (disagreement), the projection [1, 0] on tensor 1; a positive
    # step (never reversed) of length rho * cos(last tensor)
    c_last = 1.0 / np.sqrt(2.0)
    eps_ref = ref._perturbation(g_f, g_u, gamma)
    assert (eps_ref[0] > 0).all() and (eps_ref[1][0] > 0)
    assert torch.cat(eps_ref).norm().item() == pytest.approx(rho * c_last, abs=1e-12)


def test_reference_perturbation_divides_by_one_norm_over_the_whole_encoder():
    # the released optimizer normalises the projected u of all the dominant encoder's tensors together;
    # a per-tensor norm would give [0.6, 0.8] and [1, 0] (each of length rho * c) here instead
    rho = 0.3
    model = scalar_model()
    ref = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1), "binary", rho=rho, variant="reference")
    g_f = [np.array([3.0, 4.0]), np.array([2.0, 0.0])]
    g_u = [np.array([-3.0, -4.0]), np.array([1.0, 3.0])]
    # by hand: tensor 0 disagrees (<g_u, g_f> = -25) -> u0 = g_f0 = [3, 4];
    # tensor 1: <g_u, g_f> = 2, ||g_f||^2 = 4 -> u1 = 0.5 g_f1 = [1, 0]; ||u|| = sqrt(9 + 16 + 1) = sqrt(26);
    # c = cos(g_f1, g_u1) = 2 / (2 sqrt(10)) = 1 / sqrt(10)
    u = [np.array([3.0, 4.0]), np.array([1.0, 0.0])]
    scale = rho * (1 / np.sqrt(10.0)) / np.sqrt(26.0)
    eps = ref._perturbation([torch.tensor(t) for t in g_f], [torch.tensor(t) for t in g_u], torch.tensor(0.0, dtype=F64))
    for got, want in zip(eps, u, strict=True):
        np.testing.assert_allclose(got.numpy(), want * scale, rtol=0, atol=1e-15)


def test_reference_second_pass_updates_every_encoder_paper_only_the_dominant():
    mods = ["ehr", "cxr"]
    late = scalar_model()
    run_method("late_fusion", late, mods)
    paper, ref = scalar_model(), scalar_model()
    run_method("masam", paper, mods, rho=1.0, dominant="ehr")
    run_method("masam", ref, mods, rho=1.0, dominant="ehr", variant="reference")
    cxr = lambda model: torch.cat([p.detach() for p in model.encoders["cxr"].parameters()])  # noqa: E731
    assert torch.allclose(cxr(paper), cxr(late), atol=1e-12)  # g_f,cxr + g_u,cxr, unperturbed
    assert not torch.allclose(cxr(ref), cxr(late), atol=1e-6)  # L_total at the perturbed point


def test_aps_off_perturbs_every_modality():
    mods = ["ehr", "cxr"]
    model = scalar_model()
    _, gamma, *_ = hand_masam_step(params_of(model, mods), mods, rho=0.5, alpha=0.5)
    _, (metrics,) = run_method("masam", model, mods, rho=0.5, alpha=0.5, aps=False)
    expected_norm = 0.5 * np.sqrt(sum(g**2 for g in gamma.values()))
    assert metrics["perturbation_norm"].item() == pytest.approx(expected_norm, abs=1e-9)


def test_sam_equals_naive_two_pass_sam():
    mods = ["ehr", "cxr"]
    rho = 0.3
    model, naive = scalar_model(), scalar_model()
    run_method("sam", model, mods, rho=rho)

    def total_loss(m):
        out = m(batch(mods)["inputs"], batch(mods)["present"])
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(out.fused, Y) + sum(bce(out.unimodal[k], Y) for k in mods)

    params = list(naive.parameters())
    grads = torch.autograd.grad(total_loss(naive), params)
    gnorm = torch.sqrt(sum((g**2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(rho * g / gnorm)
    sharp = torch.autograd.grad(total_loss(naive), params)
    with torch.no_grad():
        for p, g, gs in zip(params, grads, sharp, strict=True):
            p.sub_(rho * g / gnorm)
            p.sub_(gs)  # SGD lr = 1
    for pa, pb in zip(model.parameters(), naive.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-10)


def test_method_state_round_trip_continues_identically():
    mods = ["ehr", "cxr"]
    model = scalar_model()
    method, _ = run_method("masam", model, mods, steps=2, rho=0.2)
    clone_model = copy.deepcopy(model)
    clone = METHODS["masam"](clone_model, torch.optim.SGD(clone_model.parameters(), lr=1.0), "binary", rho=0.2)
    clone.load_state_dict(copy.deepcopy(method.state_dict()))
    a, b = method.step(batch(mods)), clone.step(batch(mods))
    assert a["aps_ehr"].item() == b["aps_ehr"].item()
    for pa, pb in zip(model.parameters(), clone_model.parameters(), strict=True):
        assert torch.equal(pa, pb)
