"""The method contract: a method owns its network, and the network's `fused` logits are its prediction."""

from __future__ import annotations

import math

import torch

from clinfuse.models.build import build_model
from clinfuse.models.fusion import FusionModel, average_probabilities
from clinfuse.models.methods import METHODS

SPEC = {"ehr": {"name": "ehr_lstm", "hidden": 4}, "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 4}}
SHAPES = {"ehr": (48, 24), "cxr": (1, 16, 16)}


def test_mean_of_two_sigmoid_probabilities_comes_back_through_sigmoid():
    logits = {"a": torch.tensor([[0.0, 2.0]]), "b": torch.tensor([[math.log(3.0), -2.0]])}
    present = {"a": torch.tensor([True]), "b": torch.tensor([True])}
    fused = average_probabilities(logits, present, "multilabel")
    # p_a = (0.5, 0.8808), p_b = (0.75, 0.1192): means 0.625 and 0.5
    assert torch.allclose(torch.sigmoid(fused), torch.tensor([[0.625, 0.5]]), atol=1e-6)


def test_an_absent_modality_does_not_enter_the_average():
    logits = {"a": torch.tensor([[0.0], [0.0]]), "b": torch.tensor([[math.log(3.0)], [math.log(3.0)]])}
    present = {"a": torch.tensor([True, True]), "b": torch.tensor([True, False])}
    probs = torch.sigmoid(average_probabilities(logits, present, "binary"))
    assert torch.allclose(probs, torch.tensor([[0.625], [0.5]]), atol=1e-6)


def test_weighted_softmax_average_is_recovered_by_softmax():
    logits = {"a": torch.tensor([[0.0, 0.0, math.log(2.0)]]), "b": torch.tensor([[0.0, 0.0, 0.0]])}
    present = {"a": torch.tensor([True]), "b": torch.tensor([True])}
    fused = average_probabilities(logits, present, "multiclass", weights={"a": 0.4, "b": 0.6})
    expected = 0.4 * torch.tensor([0.25, 0.25, 0.5]) + 0.6 * torch.tensor([1 / 3, 1 / 3, 1 / 3])
    assert torch.allclose(torch.softmax(fused, -1)[0], expected, atol=1e-6)


def test_a_sample_with_no_modality_present_gets_the_plain_mean():
    logits = {"a": torch.tensor([[0.0]]), "b": torch.tensor([[math.log(3.0)]])}
    present = {"a": torch.tensor([False]), "b": torch.tensor([False])}
    assert torch.allclose(torch.sigmoid(average_probabilities(logits, present, "binary")), torch.tensor([[0.625]]))



def test_the_fused_prediction_is_built_on_the_logits_device():
    # The meta device stands in for a GPU on a CPU machine: like CUDA, it refuses to mix with CPU tensors,
    # so a weight or mask created on the default (CPU) device would fail here.
    logits = {m: torch.zeros(2, 3, device="meta") for m in ("a", "b")}
    present = {m: torch.ones(2, dtype=torch.bool, device="meta") for m in ("a", "b")}
    for task_type in ("multilabel", "multiclass"):
        fused = average_probabilities(logits, present, task_type)
        assert fused.device.type == "meta" and fused.shape == (2, 3)

def test_certain_probabilities_are_kept_one_eps_inside_0_and_1_for_sigmoid_tasks_only():
    # sigmoid(+-200) is exactly 1 and 0 in float32: logit would be +-inf, so p is clamped to [eps, 1 - eps]
    eps = torch.finfo(torch.float32).eps
    certain = {"a": torch.tensor([[200.0, -200.0]])}
    fused = average_probabilities(certain, {"a": torch.tensor([True])}, "multilabel")
    assert torch.equal(fused, torch.logit(torch.tensor([[1 - eps, eps]])))
    # softmax: only the floor (log 0 = -inf); a certain class keeps log 1 = 0 exactly
    fused = average_probabilities(certain, {"a": torch.tensor([True])}, "multiclass")
    assert torch.equal(fused, torch.log(torch.tensor([[1.0, eps]])))


def test_a_single_modality_s_average_is_its_own_probability():
    logits = {"a": torch.tensor([[math.log(3.0)], [0.0]], dtype=torch.float64)}
    fused = average_probabilities(logits, {"a": torch.tensor([True, False])}, "binary")
    assert torch.allclose(torch.sigmoid(fused), torch.tensor([[0.75], [0.5]], dtype=torch.float64))


def test_weights_given_as_numbers_are_used_in_the_model_s_float64():
    # 0.1 and 0.3 are not float32 numbers: rounded to float32 they would move the mean by ~1e-9
    logits = {"a": torch.tensor([[0.0]], dtype=torch.float64), "b": torch.tensor([[math.log(3.0)]], dtype=torch.float64)}
    present = {"a": torch.tensor([True]), "b": torch.tensor([True])}
    fused = average_probabilities(logits, present, "binary", weights={"a": 0.1, "b": 0.3})
    expected = (0.1 * 0.5 + 0.3 * 0.75) / (0.1 + 0.3)
    assert fused.dtype == torch.float64 and abs(torch.sigmoid(fused).item() - expected) < 1e-15


def test_the_concat_fusion_head_sees_zeros_for_an_absent_modality():
    class Const(torch.nn.Module):
        out_dim = 2

    model = FusionModel({"a": Const(), "b": Const()}, 1)
    features = {"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[3.0, 4.0]])}
    fused = model.fuse(features, {"a": torch.tensor([True]), "b": torch.tensor([False])})
    assert torch.equal(fused, model.fusion_head(torch.tensor([[1.0, 2.0, 0.0, 0.0]])))
    assert model.num_outputs == 1 and model.modalities == ["a", "b"]
    out = model.heads(features, {"a": torch.tensor([True]), "b": torch.tensor([False])})
    assert out.features is features and torch.equal(out.fused, fused)
    assert torch.equal(out.unimodal["b"], model.unimodal_heads["b"](features["b"]))  # a head sees its features


def test_every_registered_method_builds_a_network_that_returns_prediction_logits():
    torch.manual_seed(0)
    inputs = {"ehr": torch.randn(3, 48, 24), "cxr": torch.rand(3, 1, 16, 16)}
    present = {"ehr": torch.ones(3, dtype=torch.bool), "cxr": torch.tensor([True, False, True])}
    for name in METHODS:
        options = {"modality": "ehr"} if name == "unimodal" else {}
        model = build_model(SPEC, ["ehr", "cxr"], SHAPES, 5, method=name, task_type="multilabel", options=options)
        out = model(inputs, present)
        assert out.fused.shape == (3, 5), name
        assert set(out.unimodal) == {"ehr", "cxr"}, name


def test_the_default_network_is_the_concat_fusion_model():
    model = build_model(SPEC, ["ehr", "cxr"], SHAPES, 2)
    assert isinstance(model, FusionModel)


def test_encoder_parameters_are_the_trainable_parameters_of_that_modalitys_encoder():
    from tests.models.test_masam_math import scalar_model

    model = scalar_model()
    model.encoders["cxr"].c.requires_grad_(False)  # frozen: in neither list
    method = METHODS["late_fusion"](model, torch.optim.SGD(model.parameters(), lr=1.0), "binary")
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(method.encoder_params("ehr")) == ids(model.encoders["ehr"].parameters())
    assert ids(method.encoder_params("cxr")) == {id(model.encoders["cxr"].a)}


def _float64_outputs(name: str, task_type: str = "multilabel", options: dict | None = None):
    torch.manual_seed(0)
    inputs = {"ehr": torch.randn(3, 48, 24, dtype=torch.float64), "cxr": torch.rand(3, 1, 16, 16, dtype=torch.float64)}
    present = {"ehr": torch.ones(3, dtype=torch.bool), "cxr": torch.tensor([True, False, True])}
    options = options if options is not None else ({"modality": "ehr"} if name == "unimodal" else {})
    model = build_model(SPEC, ["ehr", "cxr"], SHAPES, 5, method=name, task_type=task_type, options=options).double()
    return model, model.eval()(inputs, present), present


def test_a_float64_model_predicts_in_float64_with_every_method():
    for name in METHODS:
        _, out, _ = _float64_outputs(name)
        assert out.fused.dtype == torch.float64, name
        assert all(u.dtype == torch.float64 for u in out.unimodal.values()), name


def _mean_of_present(values: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample mean over the present modalities, computed in float64 from scratch."""
    mask = torch.stack([present[m].double() for m in values])[..., None]  # [M, B, 1]
    return (torch.stack(list(values.values())) * mask).sum(0) / mask.sum(0)


def test_methods_that_average_unimodal_probabilities_do_it_in_float64_for_a_float64_model():
    # IGM (mean) and MLA (fixed, equal weights) predict the mean of the present modalities'
    # probabilities: in float64 it matches the float64 mean to rounding, not to float32's 1e-8.
    for name, options in (("igm", {}), ("mla", {"fusion": "fixed"})):
        _, out, present = _float64_outputs(name, options=options)
        expected = _mean_of_present({m: torch.sigmoid(u) for m, u in out.unimodal.items()}, present)
        assert torch.allclose(torch.sigmoid(out.fused), expected, rtol=0, atol=1e-14), name


def test_aug_combines_the_present_modalities_logits_in_float64_for_a_float64_model():
    model, out, present = _float64_outputs("aug")
    assert torch.allclose(out.fused, _mean_of_present(out.unimodal, present), rtol=0, atol=1e-14)


def test_aug_and_gblend_keep_their_accumulators_and_weights_in_the_model_s_dtype():
    for name, state in (("aug", ("score_sum", "score_count")), ("gblend", ("weights",))):
        model, _, _ = _float64_outputs(name)
        method = METHODS[name](model, torch.optim.SGD(model.parameters(), lr=0.1), "multilabel")
        for attribute in state:
            assert getattr(method, attribute).dtype == torch.float64, f"{name}.{attribute}"
