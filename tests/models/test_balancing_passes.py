"""OGM-GE and AGM run one forward pass: dropout masks and BatchNorm statistics are late fusion's."""

from __future__ import annotations

import pytest
import torch

from clinfuse.models.build import build_model
from clinfuse.models.methods import METHODS

SPEC = {
    "ehr": {"name": "ehr_transformer", "d_model": 16, "nhead": 2, "num_layers": 1, "dropout": 0.5},
    "cxr": {"name": "small_cnn", "channels": [4, 8], "out_dim": 8},
}


def make_batch(b=6):
    g = torch.Generator().manual_seed(0)
    return {
        "inputs": {"ehr": torch.randn(b, 48, 24, generator=g), "cxr": torch.rand(b, 1, 16, 16, generator=g)},
        "present": {"ehr": torch.ones(b, dtype=torch.bool), "cxr": torch.tensor([1, 0, 1, 1, 0, 1]).bool()},
        "y": (torch.rand(b, 3, generator=g) > 0.5).float(),
    }


def trained(name, **opts):
    torch.manual_seed(0)
    model = build_model(SPEC, ["ehr", "cxr"], {"ehr": (48, 24), "cxr": (1, 16, 16)}, 3)
    torch.manual_seed(123)
    METHODS[name](model, torch.optim.SGD(model.parameters(), lr=0.1), "multilabel", **opts).step(make_batch())
    return model


@pytest.mark.parametrize(("name", "opts"), [("ogm_ge", {"alpha": 0.0, "ge": False}), ("agm", {"alpha": 0.0})])
def test_unmodulated_step_matches_late_fusion_with_dropout_and_batchnorm(name, opts):
    a, b = trained(name, lambda_m=1.0, **opts), trained("late_fusion", lambda_m=1.0)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(va.float(), vb.float(), atol=1e-6), key
