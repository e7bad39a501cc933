"""The pieces every method shares (models/methods/base.py), each on a case small enough to check by
hand: option ranges and their messages, defaults read from the constructor, precision guards, the
gradient-vector algebra, RNG replay, BatchNorm freezing, the unimodal loss weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clinfuse.models.methods import METHODS
from clinfuse.models.methods.base import (
    Method,
    check_range,
    cosine,
    dot,
    frozen_batchnorm_stats,
    grads_or_zeros,
    norm,
    option,
    rng_state,
    set_rng_state,
    upcast,
)
from tests.models.test_masam_math import scalar_model

F64 = torch.float64


# --- option ranges -----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,value,ok", [
    ({"low": 0.0}, 0.0, True),  # [0, inf): 0 is in
    ({"low": 0.0, "low_open": True}, 0.0, False),  # (0, inf): 0 is out
    ({"low": 0.0, "low_open": True}, 1e-9, True),
    ({"low": 0.0}, -1e-9, False),
    ({"low": 0.0, "high": 1.0}, 1.0, True),  # [0, 1]: 1 is in
    ({"low": 0.0, "high": 1.0, "high_open": True}, 1.0, False),  # [0, 1): 1 is out
    ({"low": 0.0, "high": 1.0, "high_open": True}, 0.999, True),
    ({"high": 1.0}, 1.5, False),
    ({"high": 1.0}, -1e9, True),  # no lower bound
    ({}, float("nan"), False),  # NaN is never in range
    ({}, float("inf"), True),
])
def test_a_value_is_checked_against_its_closed_or_open_bounds(kwargs, value, ok):
    if ok:
        assert check_range("x", value, **kwargs) == value
    else:
        with pytest.raises(ValueError, match=r"^x must be in "):
            check_range("x", value, **kwargs)


@pytest.mark.parametrize("kwargs,value,message", [
    ({"low": 0.0}, -1, "x must be in [0, inf) (got -1)"),
    ({"low": 0.0, "low_open": True}, 0, "x must be in (0, inf) (got 0)"),
    ({"low": 0.0, "high": 1.0}, 1.5, "x must be in [0, 1] (got 1.5)"),
    ({"low": 0.5, "high": 2.5, "high_open": True}, 2.5, "x must be in [0.5, 2.5) (got 2.5)"),
    ({"high": 1.0}, 2.0, "x must be in (-inf, 1] (got 2.0)"),
    ({}, float("nan"), "x must be in (-inf, inf) (got nan)"),
])
def test_a_value_out_of_range_is_refused_naming_the_option_its_interval_and_the_value(kwargs, value, message):
    with pytest.raises(ValueError) as error:
        check_range("x", value, **kwargs)
    assert str(error.value) == message


def test_a_checked_value_comes_back_as_a_float():
    assert type(check_range("x", 3, 0)) is float


def test_an_option_not_in_the_config_takes_the_constructor_default():
    masam = METHODS["masam"]
    assert option(masam, {}, "rho") == 0.3
    assert option(masam, {"rho": 0.1}, "rho") == 0.1
    assert option(masam, {"rho": None}, "rho") is None  # given is given, even None


# --- precision guards and vector algebra -------------------------------------------------

@pytest.mark.parametrize("dtype,expected", [
    (torch.bfloat16, torch.float32), (torch.float16, torch.float32),
    (torch.float32, torch.float32), (torch.float64, torch.float64),
])
def test_half_precision_logits_are_upcast_to_float32_and_wider_ones_kept(dtype, expected):
    assert upcast(torch.zeros(2, dtype=dtype)).dtype == expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_vector_algebra_of_half_precision_gradients_is_float32(dtype):
    a = [torch.tensor([3.0, 4.0], dtype=dtype)]
    b = [torch.tensor([4.0, 3.0], dtype=dtype)]
    assert dot(a, b).dtype == norm(a).dtype == cosine(a, b).dtype == torch.float32
    assert (dot(a, b).item(), norm(a).item(), cosine(a, b).item()) == (24.0, 5.0, pytest.approx(0.96))


def test_dot_norm_and_cosine_run_over_every_tensor_flattened():
    a = [torch.tensor([[1.0, 2.0]], dtype=F64), torch.tensor([2.0], dtype=F64)]  # ||a|| = 3
    b = [torch.tensor([[2.0, 0.0]], dtype=F64), torch.tensor([-1.0], dtype=F64)]  # ||b|| = sqrt(5)
    assert dot(a, b).item() == 0.0  # 2 + 0 - 2
    assert norm(a).item() == 3.0
    assert cosine(a, [torch.tensor([[2.0, 4.0]], dtype=F64), torch.tensor([4.0], dtype=F64)]).item() == \
        pytest.approx(1.0, abs=1e-15)


def test_the_cosine_of_a_zero_gradient_is_zero_not_nan():
    zero = [torch.zeros(2, dtype=F64)]
    assert cosine(zero, [torch.tensor([1.0, 0.0], dtype=F64)]).item() == 0.0
    # the clamp only guards zero: a tiny but real gradient keeps its exact cosine
    tiny = [torch.tensor([1e-5, 0.0], dtype=F64)]
    assert cosine(tiny, tiny).item() == pytest.approx(1.0, abs=1e-12)


def test_a_parameter_without_a_gradient_gets_zeros_of_its_shape():
    p = [torch.ones(2, 3), torch.ones(4)]
    g = grads_or_zeros([None, torch.full((4,), 2.0)], p)
    assert torch.equal(g[0], torch.zeros(2, 3)) and torch.equal(g[1], torch.full((4,), 2.0))
    with pytest.raises(ValueError):
        grads_or_zeros([None], p)  # one gradient per parameter, never silently fewer


# --- determinism guards -------------------------------------------------------------------

def test_a_saved_rng_state_replays_the_same_dropout_mask():
    cpu = torch.device("cpu")
    state = rng_state(cpu)
    assert state[1] is None  # no CUDA state on the CPU
    first = torch.rand(5)
    set_rng_state(state, cpu)
    assert torch.equal(torch.rand(5), first)


def test_batchnorm_statistics_are_restored_after_a_frozen_pass_even_when_it_fails():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net.train()
    before = [b.clone() for b in net[1].buffers()]
    with frozen_batchnorm_stats(net):
        net(torch.randn(8, 2) * 5 + 3)
        assert not torch.equal(net[1].running_mean, before[0])  # the pass did move them
    assert all(torch.equal(a, b) for a, b in zip(net[1].buffers(), before, strict=True))
    with pytest.raises(RuntimeError), frozen_batchnorm_stats(net):
        net(torch.randn(8, 2) + 1)
        raise RuntimeError("the second pass failed")
    assert all(torch.equal(a, b) for a, b in zip(net[1].buffers(), before, strict=True))


# --- the unimodal loss weights ------------------------------------------------------------------

def base_method(lambda_m=1.0) -> Method:
    model = scalar_model()
    return Method(model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", lambda_m=lambda_m)


def test_lambda_m_weighs_each_unimodal_loss_in_the_total():
    method = base_method({"ehr": 2.0})  # cxr not named: weight 1
    assert method.lambdas == {"ehr": 2.0, "cxr": 1.0}
    total = method.total_loss(torch.tensor(0.5), {"ehr": torch.tensor(0.25), "cxr": torch.tensor(0.125)})
    assert total.item() == 0.5 + 2.0 * 0.25 + 1.0 * 0.125
    assert base_method(3).lambdas == {"ehr": 3.0, "cxr": 3.0}


def test_lambda_m_naming_an_unknown_modality_or_a_negative_weight_is_refused():
    with pytest.raises(ValueError, match=r"^lambda_m names unknown modalities \['ecg'\]$"):
        base_method({"ecg": 1.0})
    with pytest.raises(ValueError, match=r"^lambda_m\[cxr\] must be in \[0, inf\) \(got -1.0\)$"):
        base_method({"cxr": -1.0})


def test_the_logged_losses_are_detached_and_named_by_modality():
    method = base_method()
    l_fuse = torch.tensor(0.5, requires_grad=True)
    metrics = method.loss_metrics(l_fuse * 2, l_fuse, {"ehr": l_fuse * 3, "cxr": l_fuse * 4})
    assert list(metrics) == ["loss_total", "loss_fuse", "loss_ehr", "loss_cxr"]
    assert [m.item() for m in metrics.values()] == [1.0, 0.5, 1.5, 2.0]
    assert not any(m.requires_grad for m in metrics.values())


def test_forward_losses_train_the_model_and_clear_old_gradients():
    from tests.models.test_masam_math import batch

    method = base_method()
    method.model.eval()
    for p in method.model.parameters():
        p.grad = torch.ones_like(p)
    out, l_fuse, l_uni, l_total = method.forward_losses(batch(["ehr", "cxr"]))
    assert method.model.training and all(p.grad is None for p in method.model.parameters())
    assert l_total.item() == pytest.approx((l_fuse + l_uni["ehr"] + l_uni["cxr"]).item(), abs=1e-15)
    assert set(l_uni) == {"ehr", "cxr"} and not math.isnan(l_fuse.item())


def test_on_cuda_the_device_rng_state_is_saved_and_restored_with_the_cpu_one(monkeypatch):
    # the CUDA branch with the CUDA generator replaced by a recorder (CI has no GPU): dropout on a
    # GPU draws from the device generator, so replaying a mask needs its state too
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="unset": calls.append(("get", device)) or "gpu")
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state="unset", device="unset":
                        calls.append(("set", state, device)))
    gpu = torch.device("cuda", 1)
    state = rng_state(gpu)
    assert state[1] == "gpu" and calls == [("get", gpu)]
    set_rng_state(state, gpu)
    assert calls[-1] == ("set", "gpu", gpu)
    calls.clear()
    rng_state(torch.device("cpu"))
    set_rng_state((torch.get_rng_state(), None), torch.device("cpu"))
    assert calls == []  # no device generator on the CPU


def test_a_method_that_leaves_averaging_to_the_base_class_averages_every_parameter_once(monkeypatch):
    # late fusion sets plain gradients: apply_gradients averages them over ranks (a no-op in one
    # process, replaced by a recorder here), then the optimizer steps
    import clinfuse.models.methods.base as base
    from tests.models.test_masam_math import run_method

    calls = []
    monkeypatch.setattr(base, "average_gradients", lambda params: calls.append(list(params)))
    model = scalar_model()
    run_method("late_fusion", model, ["ehr", "cxr"])
    assert len(calls) == 1 and [id(p) for p in calls[0]] == [id(p) for p in model.parameters()]
