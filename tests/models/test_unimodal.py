"""The unimodal baseline: one encoder and its head trained on L_m over the samples that have modality m."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.models.methods import METHODS
from tests.models.test_masam_math import X, Y, params_of, scalar_model, sigmoid


def test_unimodal_step_is_sgd_on_the_bce_of_present_samples_only():
    mods = ["ehr", "cxr"]
    model = scalar_model()
    p = params_of(model, mods)
    present = torch.tensor([True, False, True, True])
    method = METHODS["unimodal"](model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", modality="ehr")
    metrics = method.step({"inputs": {m: X[m] for m in mods}, "present": {"ehr": present, "cxr": ~present},
                           "y": Y})
    keep = present.numpy()
    x, y = X["ehr"].numpy()[keep, 0], Y.numpy()[keep, 0]
    z = p["a_ehr"] * x + p["c_ehr"]
    u = p["v_ehr"] * z + p["e_ehr"]
    loss = -np.mean(y * np.log(sigmoid(u)) + (1 - y) * np.log(1 - sigmoid(u)))
    r = (sigmoid(u) - y) / len(y)  # dL/du per present sample
    expected = {"a_ehr": p["a_ehr"] - np.sum(r * p["v_ehr"] * x), "c_ehr": p["c_ehr"] - np.sum(r * p["v_ehr"]),
                "v_ehr": p["v_ehr"] - np.sum(r * z), "e_ehr": p["e_ehr"] - np.sum(r)}
    got = params_of(model, mods)
    for key, value in got.items():
        assert value == pytest.approx(expected.get(key, p[key]), abs=1e-12), key  # the rest is untouched
    assert set(metrics) == {"loss_total", "loss_ehr"}
    assert metrics["loss_total"].item() == pytest.approx(loss, abs=1e-12) == metrics["loss_ehr"].item()


def test_unimodal_refuses_a_modality_the_cohort_does_not_have():
    model = scalar_model()
    with pytest.raises(ValueError, match=r"^unimodal: modality 'mri' not in the cohort's \['ehr', 'cxr'\]$"):
        METHODS["unimodal"](model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", modality="mri")
