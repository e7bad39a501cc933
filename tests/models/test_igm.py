"""IGM pinned to hand computation on float64 models with two parameters per layer.

Encoder of modality m: z = a_m * x (elementwise, x and z in R^2); classifier:
Linear(2, 1) -> ReLU -> Linear(1, K). Its first layer's weight W `[1, 2]` is the one
whose gradient IGM right-multiplies by the previous modality's T.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from clinfuse.etl.errors import ConfigError
from clinfuse.models.build import build_model
from clinfuse.models.export import ExportableFusion
from clinfuse.models.losses import task_loss
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.igm import IGM, IGMModel, flat_projection, spectrum_summary
from clinfuse.pipeline.data import SplitTensors

F64 = torch.float64


class Scale(nn.Module):
    """z = a * x with a in R^2."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=F64))
        self.out_dim = 2

    def forward(self, x):
        return x * self.a


INIT = {"a": ([0.8, -0.5], [0.6, 0.9], 0.2, 1.1, -0.1),  # a, W, c, v, e
        "b": ([-0.4, 0.7], [0.5, -0.8], 0.3, -0.9, 0.05),
        "c": ([1.2, 0.3], [-0.7, 0.4], 0.4, 0.6, 0.0)}


def tiny_model(mods=("a", "b"), task_type="binary", k=1) -> IGMModel:
    model = IGMModel({m: Scale(INIT[m][0]) for m in mods}, k, task_type, hidden=1).double()
    with torch.no_grad():
        for m in mods:
            _, w, c, v, e = INIT[m]
            model.classifiers[m][0].weight.copy_(torch.tensor([w], dtype=F64))
            model.classifiers[m][0].bias.fill_(c)
            model.classifiers[m][2].weight.fill_(v)
            model.classifiers[m][2].bias.fill_(e)
    return model


X = {"a": torch.tensor([[0.5, 1.0], [-1.0, 0.4], [2.0, -0.3], [0.3, 0.8]], dtype=F64),
     "b": torch.tensor([[1.5, -0.2], [0.2, 0.9], [-0.7, 1.3], [1.1, 0.1]], dtype=F64),
     "c": torch.tensor([[-0.4, 0.6], [0.9, -1.1], [0.6, 0.2], [-1.3, 0.5]], dtype=F64)}
Y = torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=F64)


def batch(mods=("a", "b"), rows=slice(None), present=None):
    present = present or {}
    n = len(Y[rows])
    return {"inputs": {m: X[m][rows] for m in mods},
            "present": {m: present.get(m, torch.ones(n, dtype=torch.bool)) for m in mods},
            "y": Y[rows]}


def igm(model, lr=1.0, **options) -> IGM:
    return IGM(model, torch.optim.SGD(model.parameters(), lr=lr), "binary", **options)


def sigmoid(t):
    return 1 / (1 + np.exp(-t))


# --- T_k (Eqs. 3-4) ------------------------------------------------------------------------


def test_flat_projection_of_a_3x3_matrix_matches_the_hand_computation():
    # Y has eigenvalues 4 (v = (1, 1, 0)/sqrt 2), 2 (v = (1, -1, 0)/sqrt 2) and 1 (v = e_3), so
    # Sigma = exp(-tau (lambda - 1) / 3): exp(-tau) at lambda_max, exp(-tau/3), and 1 at lambda_min.
    tau = 0.4
    y = torch.tensor([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    t, lam = flat_projection(y, tau)
    s_max, s_mid = math.exp(-tau), math.exp(-tau / 3)
    expected = torch.tensor([[(s_max + s_mid) / 2, (s_max - s_mid) / 2, 0.0],
                             [(s_max - s_mid) / 2, (s_max + s_mid) / 2, 0.0],
                             [0.0, 0.0, 1.0]], dtype=F64)
    assert torch.allclose(lam, torch.tensor([1.0, 2.0, 4.0], dtype=F64))
    assert torch.allclose(t, expected, atol=1e-12)


def test_spectrum_summary_gives_extreme_eigenvalues_effective_rank_and_mean_sigma():
    lam = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    p = np.array([1, 2, 4]) / 7
    summary = spectrum_summary(lam, 0.4)
    expected = [4.0, 1.0, math.exp(-(p * np.log(p)).sum()), (1 + math.exp(-0.4 / 3) + math.exp(-0.4)) / 3]
    assert np.allclose(summary.numpy(), expected)


def test_equal_eigenvalues_give_the_identity_and_tau_zero_gives_the_identity():
    assert torch.allclose(flat_projection(2.0 * torch.eye(3, dtype=F64), 0.4)[0], torch.eye(3, dtype=F64))
    y = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=F64)
    assert torch.allclose(flat_projection(y, 0.0)[0], torch.eye(2, dtype=F64), atol=1e-12)


def test_feature_matrix_sums_outer_products_of_batch_means_over_present_samples():
    model = tiny_model()
    method = igm(model)
    method.pass_batch_size = 2
    present = {"a": torch.tensor([True, False, True, True]), "b": torch.ones(4, dtype=torch.bool)}
    tensors = SplitTensors(np.arange(4), {m: X[m] for m in "ab"}, present, Y)
    y = method.feature_matrix("a", tensors)
    a = np.array(INIT["a"][0])
    z = X["a"].numpy() * a
    zbar1, zbar2 = z[0], (z[2] + z[3]) / 2  # batch 1 = rows 0, 1 (row 1 absent); batch 2 = rows 2, 3
    assert np.allclose(y.numpy(), np.outer(zbar1, zbar1) + np.outer(zbar2, zbar2))
    # a batch where the modality is absent for everyone adds nothing
    present["a"] = torch.tensor([False, False, True, True])
    assert np.allclose(method.feature_matrix("a", tensors).numpy(), np.outer(zbar2, zbar2))


# --- the gradient modification (Eq. 5) -------------------------------------------------------


def test_previous_modality_in_cyclic_order_for_two_and_three_modalities():
    assert [igm(tiny_model(("a", "b"))).previous(j) for j in range(2)] == [1, 0]
    assert [igm(tiny_model(("a", "b", "c"))).previous(j) for j in range(3)] == [2, 0, 1]


def hand_gradients(m):
    """dL_m/dW `[1, 2]` and dL_m/da `[2]` of the tiny model on the full batch, in numpy."""
    a, w, c, v, e = (np.array(t, dtype=float) for t in INIT[m])
    z = X[m].numpy() * a  # [4, 2]
    h = z @ w + c  # [4]
    o = v * np.maximum(h, 0) + e
    do = (sigmoid(o) - Y[:, 0].numpy()) / 4
    dh = do * v * (h > 0)
    return (dh[:, None] * z).sum(0)[None, :], (dh[:, None] * X[m].numpy() * w).sum(0)


@pytest.mark.parametrize(("mods", "active"), [(("a", "b"), 0), (("a", "b"), 1), (("a", "b", "c"), 0),
                                              (("a", "b", "c"), 2)])
def test_first_layer_gradient_is_right_multiplied_by_the_previous_modality_t(mods, active):
    model = tiny_model(mods)
    method = igm(model, rho=0.0, inner_iters=5)
    method.active = active
    # a distinct symmetric T per modality, so using the wrong one shows
    for i, m in enumerate(mods):
        method.projections[m] = torch.tensor([[1.0 - 0.1 * i, 0.2 + 0.1 * i], [0.2 + 0.1 * i, 0.5]], dtype=F64)
    j, k = mods[active], mods[(active - 1) % len(mods)]
    w0 = model.classifiers[j][0].weight.detach().clone()
    a0 = model.encoders[j].a.detach().clone()
    others = {name: p.detach().clone() for name, p in model.named_parameters() if f".{j}." not in name}
    method.step(batch(mods))
    g_w, g_a = hand_gradients(j)
    expected_w = w0.numpy() - g_w @ method.projections[k].numpy()
    assert np.allclose(model.classifiers[j][0].weight.detach().numpy(), expected_w)
    assert np.allclose(model.encoders[j].a.detach().numpy(), a0.numpy() - g_a)  # unmodified elsewhere
    for name, p in model.named_parameters():
        if name in others:
            assert torch.equal(p, others[name]), f"{name} of an inactive modality moved"


def test_with_tau_near_zero_and_no_radius_igm_is_plain_alternating_unimodal_training():
    mods = ("a", "b")
    igm_model, plain = tiny_model(mods), tiny_model(mods)
    method = IGM(igm_model, torch.optim.AdamW(igm_model.parameters(), lr=0.05), "binary",
                 tau=1e-12, rho=0.0, inner_iters=2)
    opt = torch.optim.AdamW(plain.parameters(), lr=0.05)
    tensors = SplitTensors(np.arange(4), {m: X[m] for m in mods},
                           {m: torch.ones(4, dtype=torch.bool) for m in mods}, Y)
    method.on_epoch_start(0, tensors)
    rows = [slice(0, 2), slice(2, 4)] * 4
    for step, r in enumerate(rows):
        b = batch(mods, r)
        method.step(b)  # T is recomputed after every second step (tau ~ 0: T ~ I)
        j = mods[(step // 2) % 2]  # the plain loop: modality j for two steps, then the other
        opt.zero_grad(set_to_none=True)
        z = plain.encode(j, b["inputs"][j])
        task_loss(plain.classify(j, z), b["y"], "binary").backward()
        opt.step()
    for (name, p), q in zip(igm_model.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-10), name
    assert method.phases_done == 4


# --- SAM on the active modality (Eqs. 6-8) ---------------------------------------------------


def test_sam_step_equals_a_naive_two_pass_sam_on_the_active_modality():
    rho = 0.5
    model, naive = tiny_model(), tiny_model()
    method = igm(model, lr=0.1, rho=rho, inner_iters=5)
    method.step(batch())
    # naive SAM on modality "a" (T_b = I before any phase ended): ascend, gradient there, restore, step
    params = list(naive.encoders["a"].parameters()) + list(naive.classifiers["a"].parameters())
    loss = task_loss(naive.classify("a", naive.encode("a", X["a"])), Y, "binary")
    g = torch.autograd.grad(loss, params)
    g_norm = torch.sqrt(sum((t**2).sum() for t in g))
    originals = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, t in zip(params, g, strict=True):
            p.add_(rho * t / g_norm)
    loss_p = task_loss(naive.classify("a", naive.encode("a", X["a"])), Y, "binary")
    g_sharp = torch.autograd.grad(loss_p, params)
    with torch.no_grad():
        for p, o, t in zip(params, originals, g_sharp, strict=True):
            p.copy_(o - 0.1 * t)
    for (name, p), q in zip(model.named_parameters(), naive.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-12), name
    # and the radius really moves the result away from the plain gradient step
    plain = tiny_model()
    igm(plain, lr=0.1, rho=0.0, inner_iters=5).step(batch())
    assert not torch.allclose(plain.classifiers["a"][0].weight, model.classifiers["a"][0].weight, atol=1e-6)


def test_default_radius_perturbs_float32_parameters():
    model = tiny_model().float()
    reference = copy.deepcopy(model)
    b = {"inputs": {m: X[m].float() for m in "ab"}, "present": batch()["present"], "y": Y.float()}
    IGM(model, torch.optim.SGD(model.parameters(), lr=0.1), "binary", inner_iters=5).step(b)
    IGM(reference, torch.optim.SGD(reference.parameters(), lr=0.1), "binary", rho=0.0, inner_iters=5).step(b)
    assert not torch.equal(model.encoders["a"].a, reference.encoders["a"].a)


# --- Algorithm 1 schedule --------------------------------------------------------------------


@pytest.mark.parametrize(("mods", "expected"), [(("a", "b"), [0, 0, 1, 1]), (("a", "b", "c"), [0, 0, 1, 2])])
def test_by_default_one_epoch_is_one_outer_iteration_shared_out_by_samples_seen(mods, expected):
    # 28 samples in batches of 8, 8, 8, 4: phase p ends once seen * m >= (p + 1) * 28
    n = 28
    g = torch.Generator().manual_seed(0)
    xs = {m: torch.randn(n, 2, generator=g, dtype=F64) for m in mods}
    tensors = SplitTensors(np.arange(n), xs, {m: torch.ones(n, dtype=torch.bool) for m in mods},
                           (torch.rand(n, 1, generator=g) > 0.5).double())
    method = igm(tiny_model(mods), lr=0.01)
    for epoch in range(2):
        method.on_epoch_start(epoch, tensors)
        trained = []
        for b in tensors.batches(8, g):
            trained.append(method.active)
            method.step(b)
        metrics = method.on_epoch_end(epoch, tensors)
        assert trained == expected
        assert method.active == 0 and metrics["igm_outer_iterations"].item() == epoch + 1
        assert {f"igm_{m}_lambda_max" for m in mods} <= set(metrics)


def test_step_reports_the_active_modality_loss():
    metrics = igm(tiny_model(), inner_iters=3).step(batch())
    assert set(metrics) == {"loss_total", "loss_a"}
    assert metrics["loss_total"].requires_grad is False


# --- missing modalities and the prediction rule ----------------------------------------------


def test_a_sample_without_the_active_modality_does_not_change_its_update():
    present = {"a": torch.tensor([True, False, True, True])}
    b1, b2 = batch(present=present), batch(present=present)
    b2["inputs"]["a"] = b2["inputs"]["a"].clone()
    b2["inputs"]["a"][1] = torch.tensor([9.0, -9.0], dtype=F64)
    b2["y"] = b2["y"].clone()
    b2["y"][1] = 1.0 - b2["y"][1]
    m1, m2 = tiny_model(), tiny_model()
    igm(m1, rho=0.3, inner_iters=5).step(b1)
    igm(m2, rho=0.3, inner_iters=5).step(b2)
    for (name, p), q in zip(m1.named_parameters(), m2.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-12), name


def test_fused_prediction_is_the_mean_probability_of_the_present_modalities():
    model = tiny_model(("a", "b", "c"))
    present = {"a": torch.ones(4, dtype=torch.bool), "b": torch.tensor([True, False, True, False]),
               "c": torch.tensor([True, True, False, False])}
    out = model(batch(("a", "b", "c"))["inputs"], present)
    p = {m: torch.sigmoid(out.unimodal[m]) for m in "abc"}
    expected = torch.stack([(p["a"][0] + p["b"][0] + p["c"][0]) / 3, (p["a"][1] + p["c"][1]) / 2,
                            (p["a"][2] + p["b"][2]) / 2, p["a"][3]])
    assert torch.allclose(torch.sigmoid(out.fused.double()), expected, atol=1e-6)


@pytest.mark.parametrize("task_type", ["multilabel", "binary", "multiclass"])
def test_igm_network_exports_with_its_fusion_rule(task_type):
    spec = {"ehr": {"name": "ehr_lstm", "hidden": 4}, "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 4}}
    torch.manual_seed(0)
    k = 1 if task_type == "binary" else 3
    model = build_model(spec, ["ehr", "cxr"], {"ehr": (48, 24), "cxr": (1, 16, 16)}, k, method="igm",
                        task_type=task_type).eval()
    args = (torch.randn(5, 48, 24), torch.rand(5, 1, 16, 16), torch.ones(5), torch.tensor([1.0, 0, 1, 0, 1]))
    wrapped = ExportableFusion(model, task_type).eval()
    probs = torch.export.export(wrapped, args).module()(*args)
    out = model({"ehr": args[0], "cxr": args[1]}, {"ehr": args[2] > 0.5, "cxr": args[3] > 0.5})
    act = (lambda t: torch.softmax(t, -1)) if task_type == "multiclass" else torch.sigmoid
    p_ehr, p_cxr = act(out.unimodal["ehr"]), act(out.unimodal["cxr"])
    expected = torch.where(args[3][:, None] > 0.5, (p_ehr + p_cxr) / 2, p_ehr)
    assert torch.allclose(probs, expected, atol=1e-5)


# --- configuration -----------------------------------------------------------------------------


def test_different_feature_widths_are_a_one_line_config_error_naming_both():
    spec = {"tabular": {"name": "tabular_mlp", "hidden": 64, "out_dim": 8, "dropout": 0.1},
            "mri": {"name": "small_cnn_3d", "channels": [2], "out_dim": 16}}
    shapes = {"tabular": (6,), "mri": (1, 8, 8, 8)}
    with pytest.raises(ConfigError, match="tabular out_dim 8, mri out_dim 16"):
        build_model(spec, ["tabular", "mri"], shapes, 3, method="igm", task_type="multiclass")
    model = build_model(spec, ["tabular", "mri"], shapes, 3, method="igm", task_type="multiclass",
                        options={"feature_dim": 16})
    assert model.first_linear("tabular").in_features == model.first_linear("mri").in_features == 16
    assert not hasattr(model.encoders["mri"], "projection")  # already 16 wide: no projection


def test_unknown_fusion_rule_is_refused():
    spec = {"ehr": {"name": "ehr_lstm", "hidden": 4}, "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 4}}
    with pytest.raises(ConfigError, match="options.fusion"):
        build_model(spec, ["ehr", "cxr"], {"ehr": (48, 24), "cxr": (1, 16, 16)}, 2, method="igm",
                    options={"fusion": "max"})


def test_state_dict_round_trip_restores_projections_and_phase():
    mods = ("a", "b")
    tensors = SplitTensors(np.arange(4), {m: X[m] for m in mods},
                           {m: torch.ones(4, dtype=torch.bool) for m in mods}, Y)
    method = igm(tiny_model(mods), lr=0.1, inner_iters=3)
    method.on_epoch_start(0, tensors)
    for r in [slice(0, 2), slice(2, 4)] * 2:
        method.step(batch(mods, r))
    restored = igm(tiny_model(mods), inner_iters=3)
    restored.load_state_dict(copy.deepcopy(method.state_dict()))
    assert (restored.active, restored.phase_steps, restored.phases_done) == (1, 1, 1)
    assert torch.equal(restored.projections["a"], method.projections["a"])
    assert not torch.equal(restored.projections["a"], torch.eye(2, dtype=F64))
    assert "igm" in METHODS and METHODS["igm"] is IGM
