"""A per-encoder landscape or Hessian encodes the other modalities once, and every number stays the same."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clinfuse.evaluation.flatness import (
    filter_normalized_direction,
    hutchinson_trace,
    landscape_1d,
    landscape_2d,
)
from clinfuse.models.build import build_model
from clinfuse.models.losses import task_loss
from clinfuse.models.methods import METHODS
from clinfuse.pipeline.stages.analyze import _scopes, others_encoded_once

# The transformer matters: under no_grad nn.TransformerEncoder takes its fast path, whose last bits differ.
SPEC = {"ehr": {"name": "ehr_transformer", "d_model": 8, "nhead": 2, "num_layers": 1, "dropout": 0.1},
        "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 8}}  # IGM: equal widths
SHAPES = {"ehr": (48, 24), "cxr": (1, 16, 16)}


class Counting(nn.Module):
    """y = w * x, counting its calls."""

    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.w * x


class TwoEncoders(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoders = nn.ModuleDict({"a": Counting(2.0), "b": Counting(3.0)})

    def forward(self, x):
        return self.encoders["a"](x) + self.encoders["b"](x)


def test_while_a_moves_b_encodes_the_same_batch_once_and_the_sums_are_unchanged():
    model, x = TwoEncoders().eval(), torch.tensor([1.0, 2.0])
    a, b = model.encoders["a"], model.encoders["b"]
    with others_encoded_once(model, "a"), torch.no_grad():
        sums = []
        for shift in (0.0, 1.0, -1.0):
            a.w.add_(shift)
            sums.append(model(x).sum().item())  # (w_a + 3) * 3
    assert sums == [15.0, 18.0, 15.0]
    assert (a.calls, b.calls) == (3, 1)
    assert model.encoders["b"] is b  # restored


def test_a_new_batch_is_encoded_afresh():
    model = TwoEncoders().eval()
    with others_encoded_once(model, "a"):
        first, second = model(torch.tensor([1.0])), model(torch.tensor([2.0]))
    assert (first.item(), second.item()) == (5.0, 10.0)
    assert model.encoders["b"].calls == 2


def test_a_call_in_another_grad_mode_is_encoded_afresh():
    # nn.TransformerEncoder takes another kernel under no_grad: features kept from a landscape
    # (no_grad) must not stand in for those of a Hessian (grad enabled).
    model, x = TwoEncoders().eval(), torch.tensor([1.0])
    with others_encoded_once(model, "a"):
        with torch.no_grad():
            model(x), model(x)
        model(x), model(x)
    assert model.encoders["b"].calls == 2


def test_scope_all_moves_every_weight_so_nothing_is_reused():
    model, x = TwoEncoders().eval(), torch.tensor([1.0])
    with others_encoded_once(model, "all"):
        model(x), model(x)
    assert (model.encoders["a"].calls, model.encoders["b"].calls) == (2, 2)


def test_an_encoder_that_shares_the_scope_s_weights_moves_with_it_and_is_always_called():
    model, x = TwoEncoders().eval(), torch.tensor([1.0])
    model.encoders["b"] = model.encoders["a"]  # one module under two names
    with others_encoded_once(model, "a"), torch.no_grad():
        first = model(x).item()
        model.encoders["a"].w.add_(1.0)
        second = model(x).item()
    assert (first, second) == (4.0, 6.0)
    assert model.encoders["a"].calls == 4


def test_an_encoder_in_training_mode_is_always_called():
    model, x = TwoEncoders().train(), torch.tensor([1.0])
    with others_encoded_once(model, "a"):
        model(x), model(x)
    assert model.encoders["b"].calls == 2


def test_the_encoders_are_restored_after_an_error():
    model = TwoEncoders().eval()
    b = model.encoders["b"]
    with pytest.raises(RuntimeError), others_encoded_once(model, "a"):
        raise RuntimeError("landscape failed")
    assert model.encoders["b"] is b


def test_a_model_without_named_encoders_is_left_as_it_is():
    model = nn.Linear(2, 1)
    with others_encoded_once(model, "ehr"):
        assert model(torch.ones(1, 2)).shape == (1, 1)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_s_per_encoder_landscape_and_trace_are_bitwise_the_same(name):
    torch.manual_seed(0)
    options = {"modality": "ehr"} if name == "unimodal" else {}
    model = build_model(SPEC, ["ehr", "cxr"], SHAPES, 3, method=name, task_type="multilabel", options=options).eval()
    batch = {"inputs": {"ehr": torch.randn(6, 48, 24), "cxr": torch.rand(6, 1, 16, 16)},
             "present": {"ehr": torch.ones(6, dtype=torch.bool), "cxr": torch.tensor([True, False] * 3)},
             "y": (torch.rand(6, 3) < 0.5).float()}

    def loss():
        return task_loss(model(batch["inputs"], batch["present"]).fused, batch["y"], "multilabel")

    scopes, _ = _scopes(model)
    alphas = [-0.5, 0.0, 0.5]
    for scope, params in scopes.items():
        g = torch.Generator().manual_seed(1)
        d1, d2 = filter_normalized_direction(params, g), filter_normalized_direction(params, g)

        def numbers(params=params, d1=d1, d2=d2):
            return (landscape_1d(loss, params, d1, alphas).tolist(),
                    landscape_2d(loss, params, d1, d2, alphas, alphas).tolist(),
                    hutchinson_trace(lambda: [loss()], params, 2, torch.Generator().manual_seed(2))["trace"])

        plain = numbers()
        with others_encoded_once(model, scope):
            reused = numbers()
        assert reused == plain, (name, scope)
