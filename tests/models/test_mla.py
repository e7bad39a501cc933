"""MLA: OWM projector update, projected head gradient, alternating steps and the test-time fusion rule."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from clinfuse.etl.errors import ConfigError
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.mla import MLANet, owm_update

F64 = torch.float64


class LinearEncoder(nn.Module):
    """z = A x with A `[2, 2]` (a tiny float64 encoder with out_dim 2)."""

    def __init__(self, a, out_dim=2):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(a, dtype=F64))
        self.out_dim = out_dim

    def forward(self, x):
        return x @ self.A.T


INIT = {"ehr": [[0.5, -0.2], [0.3, 0.8]], "cxr": [[-0.4, 0.6], [0.9, 0.1]], "mri": [[0.2, 0.2], [-0.7, 0.5]]}
XS = {
    "ehr": torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.0]], dtype=F64),
    "cxr": torch.tensor([[0.2, -0.4], [1.5, 0.3], [-0.8, 0.9]], dtype=F64),
    "mri": torch.tensor([[0.6, 0.1], [-0.2, -0.5], [1.1, 0.4]], dtype=F64),
}
Y = torch.tensor([[1.0], [0.0], [1.0]], dtype=F64)


def mla_model(mods=("ehr", "cxr"), **kw) -> MLANet:
    model = MLANet({m: LinearEncoder(INIT[m]) for m in mods}, 1, "binary", **kw).double()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[0.7, -0.5]], dtype=F64))
        model.head.bias.fill_(0.1)
    return model


def batch(mods=("ehr", "cxr"), present=None):
    return {"inputs": {m: XS[m] for m in mods},
            "present": present or {m: torch.ones(3, dtype=torch.bool) for m in mods}, "y": Y}


def method(model, **options):
    return METHODS["mla"](model, torch.optim.SGD(model.parameters(), lr=0.5), "binary", **options)


def test_owm_projector_update_matches_hand_computation():
    p = torch.eye(2, dtype=F64)
    r = torch.tensor([1.0, 2.0], dtype=F64)
    # k = P r = (1, 2); r.k = 5; P - k k^T / (0.1 + 5), then divided by its Frobenius norm
    raw = np.array([[1 - 1 / 5.1, -2 / 5.1], [-2 / 5.1, 1 - 4 / 5.1]])
    expected = raw / np.sqrt((raw**2).sum())
    assert np.allclose(owm_update(p, r, 0.1).numpy(), expected, atol=1e-12)


def naive_alternation(model, b, steps, lr=0.5, project=True, n_samples=0):
    """The paper's loop written plainly: per modality, loss -> grad -> (OWM projection of W's grad) -> SGD."""
    params = list(model.parameters())
    P = torch.eye(2, dtype=F64)
    updates, seen = 0, 0
    for _ in range(steps):
        a = 0.1 ** (1 + (seen / n_samples if n_samples else 0.0))
        for m in model.modalities:
            z = model.encoders[m](b["inputs"][m])
            loss = nn.functional.binary_cross_entropy_with_logits(model.head(z), b["y"])
            grads = dict(zip([id(p) for p in params], torch.autograd.grad(loss, params, allow_unused=True),
                             strict=True))
            if project and updates > 0:
                r = z.detach().mean(0)
                k = P @ r
                P = P - torch.outer(k, k) / (a + r @ k)
                P = P / torch.sqrt((P**2).sum())
                grads[id(model.head.weight)] = grads[id(model.head.weight)] @ P.T
            updates += 1
            with torch.no_grad():
                for p in params:
                    if grads[id(p)] is not None:
                        p -= lr * grads[id(p)]
        seen += len(b["y"])
    return P


@pytest.mark.parametrize("project", [True, False])
def test_alternating_steps_with_projected_head_gradient_match_the_plain_loop(project):
    a, b = mla_model(), mla_model()
    m = method(a, projection=project)
    for _ in range(3):
        m.step(batch())
    P = naive_alternation(b, batch(), steps=3, project=project)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-12), name
    if project:
        assert torch.allclose(m.P, P, atol=1e-12)
        assert not torch.allclose(m.P, torch.eye(2, dtype=F64) / math.sqrt(2))


def test_projection_regulariser_follows_the_share_of_the_epoch_already_seen():
    a, b = mla_model(), mla_model()
    m = method(a)
    m.on_epoch_start(0, SimpleNamespace(rank_samples=6))  # an epoch of 6 samples: alpha = 0.1, then 0.1^1.5
    m.step(batch())
    m.step(batch())
    naive_alternation(b, batch(), steps=2, n_samples=6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-12)


def test_the_first_modality_update_is_not_projected_the_second_is():
    model = mla_model()
    m = method(model)
    m.step(batch())
    assert m.head_updates == 2
    assert not torch.allclose(m.P, torch.eye(2, dtype=F64))  # updated once, by the second modality


def test_entropy_gating_weighs_each_sample_by_its_more_certain_modality():
    model = mla_model()
    unimodal = {"ehr": torch.tensor([[0.0], [math.log(9.0)]], dtype=F64),
                "cxr": torch.tensor([[math.log(3.0)], [0.0]], dtype=F64)}
    present = {m: torch.ones(2, dtype=torch.bool) for m in unimodal}
    probs = torch.sigmoid(model.combine(unimodal, present))[:, 0]

    def h(p):
        return -p * math.log(p) - (1 - p) * math.log(1 - p)

    # sample 0: p = 0.5 (ehr) and 0.75 (cxr); sample 1: p = 0.9 (ehr) and 0.5 (cxr)
    for i, (pe, pc) in enumerate([(0.5, 0.75), (0.9, 0.5)]):
        e_max = max(h(pe), h(pc))
        we, wc = math.exp(e_max - h(pe)), math.exp(e_max - h(pc))
        assert probs[i].item() == pytest.approx((we * pe + wc * pc) / (we + wc), abs=1e-6)  # the rule runs in fp32


def test_fixed_fusion_uses_the_configured_weights_and_skips_absent_modalities():
    model = mla_model(fusion="fixed", fusion_weights={"ehr": 0.55, "cxr": 0.45})
    unimodal = {"ehr": torch.zeros(2, 1, dtype=F64), "cxr": torch.full((2, 1), math.log(3.0), dtype=F64)}
    present = {"ehr": torch.tensor([True, True]), "cxr": torch.tensor([True, False])}
    probs = torch.sigmoid(model.combine(unimodal, present))[:, 0]
    assert probs[0].item() == pytest.approx(0.55 * 0.5 + 0.45 * 0.75, abs=1e-6)  # the rule runs in fp32
    assert probs[1].item() == pytest.approx(0.5, abs=1e-6)


def test_the_network_prediction_is_the_fusion_rule_of_the_shared_head():
    model = mla_model(("ehr", "cxr", "mri"))
    b = batch(("ehr", "cxr", "mri"))
    out = model(b["inputs"], b["present"])
    assert torch.allclose(out.unimodal["mri"], model.head(model.encode("mri", XS["mri"])))
    assert torch.allclose(out.fused, model.combine(out.unimodal, b["present"]))


def test_unequal_encoder_widths_are_a_one_line_error_naming_them():
    with pytest.raises(ConfigError, match="ehr=2, cxr=3") as err:
        MLANet({"ehr": LinearEncoder(INIT["ehr"]), "cxr": LinearEncoder(INIT["cxr"], out_dim=3)}, 1, "binary")
    assert "\n" not in str(err.value) and "shared_dim" in str(err.value)


def test_shared_dim_adds_a_projection_per_modality():
    model = MLANet({"ehr": LinearEncoder(INIT["ehr"]), "cxr": LinearEncoder(INIT["cxr"], out_dim=3)}, 1,
                   "binary", shared_dim=4)
    assert model.head.in_features == 4 and model.projections["cxr"].in_features == 3


def test_mla_state_round_trip_continues_identically():
    model = mla_model()
    m = method(model)
    for _ in range(2):
        m.step(batch())
    clone_model = copy.deepcopy(model)
    clone = method(clone_model)
    clone.load_state_dict(copy.deepcopy(m.state_dict()))
    m.step(batch())
    clone.step(batch())
    assert torch.equal(m.P, clone.P)
    for pa, pb in zip(model.parameters(), clone_model.parameters(), strict=True):
        assert torch.equal(pa, pb)
