"""The gradient-vector algebra (dot, norm, cosine) stays in float32 under bf16 autocast."""

from __future__ import annotations

import math

import torch

from clinfuse.models.methods.base import cosine, dot, norm


def vectors(dtype):
    torch.manual_seed(0)
    a = [torch.randn(3, 4), torch.randn(5)]
    b = [torch.randn(3, 4), torch.randn(5)]
    return [t.to(dtype) for t in a], [t.to(dtype) for t in b]


def test_half_precision_gradients_are_summed_in_float32():
    a, b = vectors(torch.bfloat16)
    a64, b64 = [t.double() for t in a], [t.double() for t in b]
    exact_dot = sum(float((x * y).sum()) for x, y in zip(a64, b64, strict=True))
    exact_norm = math.sqrt(sum(float((x * x).sum()) for x in a64))
    assert dot(a, b).dtype == norm(a).dtype == cosine(a, b).dtype == torch.float32
    assert abs(float(dot(a, b)) - exact_dot) < 1e-5
    assert abs(float(norm(a)) - exact_norm) < 1e-5


def test_under_bf16_autocast_the_results_equal_those_without_it():
    a, b = vectors(torch.float32)
    plain = (dot(a, b), norm(a), cosine(a, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = (dot(a, b), norm(a), cosine(a, b))
    for p, c in zip(plain, cast, strict=True):
        assert c.dtype == torch.float32 and torch.equal(p, c)


def test_float64_stays_float64():
    a, b = vectors(torch.float64)
    assert cosine(a, b).dtype == torch.float64


def test_a_masam_step_under_bf16_autocast_takes_gamma_and_the_perturbation_in_float32():
    from clinfuse.models.methods import METHODS
    from tests.models.tiny_fusion import tiny_batch, tiny_model

    model = tiny_model().float()
    batch = tiny_batch()
    batch["inputs"] = {m: x.float() for m, x in batch["inputs"].items()}
    method = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=0.1), "multiclass")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        metrics = method.step(batch)
    for key in ("gamma_a", "gamma_v", "aps_a", "perturbation_norm"):
        assert metrics[key].dtype == torch.float32, key
        assert torch.isfinite(metrics[key]), key
    assert all(p.dtype == torch.float32 for p in model.parameters())
