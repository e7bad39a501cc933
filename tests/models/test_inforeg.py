"""InfoReg pinned to hand computation: the window rule, the scores, the coefficient and the
regulariser's gradient (float64 scalar model), its reduction to late fusion, its state, and runs.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from clinfuse.models.build import build_model
from clinfuse.models.fusion import FusionModel
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.inforeg import InfoReg
from clinfuse.pipeline.inference import load_trained_model
from clinfuse.pipeline.trainer import StopTraining, fit
from tests.fixtures.cohorts import write_cohort
from tests.models.tiny_fusion import ScalarEncoder

from .balancing_cohorts import run_spec, write_binary_cohort

F64 = torch.float64
MODS = ["ehr", "tabular"]


def scalar_model(k: int = 3) -> FusionModel:
    model = FusionModel({"ehr": ScalarEncoder(0.8, -0.3), "tabular": ScalarEncoder(-0.5, 0.4)}, k).double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("encoders"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5)
    return model


X = {"ehr": torch.tensor([[0.5], [-1.0], [2.0], [0.3]], dtype=F64),
     "tabular": torch.tensor([[1.5], [0.2], [-0.7], [1.1]], dtype=F64)}
PRESENT = {"ehr": torch.ones(4, dtype=torch.bool), "tabular": torch.tensor([True, True, False, True])}
Y = torch.tensor([0, 2, 1, 1])


def batch():
    return {"inputs": X, "present": PRESENT, "y": Y}


def method_for(model, task_type="multiclass", **options):
    return InfoReg(model, torch.optim.SGD(model.parameters(), lr=1.0), task_type, **options)


# --- the prime learning window -------------------------------------------------------------


def test_information_rate_is_the_relative_growth_of_the_moving_average_of_the_trace():
    m = method_for(scalar_model(), history=2)
    assert m.information_rate([]) == 1.0  # epoch 0: no trace yet
    assert m.information_rate([2.0]) == pytest.approx((2 - 0) / (0 + 2))
    assert m.information_rate([2.0, 4.0]) == pytest.approx((4 - 0) / (2 + 4))
    assert m.information_rate([1.0, 2.0, 3.0]) == pytest.approx((3 - 1) / (2 + 3))
    assert m.information_rate([5.0, 5.0, 5.0, 5.0]) == 0.0  # the trace stopped growing


def test_window_decision_per_modality_at_epoch_start():
    model = scalar_model()
    m = method_for(model, history=2, threshold=0.05)
    m.traces = {"ehr": [1.0, 2.0, 3.0], "tabular": [4.0, 4.1, 4.15]}
    metrics = m.on_epoch_start(3, None)
    # ehr: (3 - 1) / 5 = 0.4 > 0.05; tabular: (4.15 - 4.0) / 8.25 = 0.018 <= 0.05
    assert metrics["information_rate_ehr"].item() == pytest.approx(0.4)
    assert metrics["information_rate_tabular"].item() == pytest.approx(0.15 / 8.25)
    assert m.window == {"ehr": True, "tabular": False}
    assert metrics["in_window_ehr"].item() == 1.0 and metrics["in_window_tabular"].item() == 0.0


def test_fisher_trace_is_the_epoch_mean_of_squared_encoder_gradients():
    model, reference = scalar_model(), scalar_model()
    m = method_for(model, alpha=0.0)
    m.on_epoch_start(0, None)
    expected = {k: [] for k in MODS}
    for _ in range(2):
        out = reference(X, PRESENT)
        late = METHODS["late_fusion"](reference, torch.optim.SGD(reference.parameters(), lr=1.0), "multiclass")
        loss = late.total_loss(late.fusion_loss(out, batch()), late.unimodal_losses(out, batch()))
        for k in MODS:
            grads = torch.autograd.grad(loss, list(reference.encoders[k].parameters()), retain_graph=True)
            expected[k].append(sum(float((g**2).sum()) for g in grads))
        late.step(batch())
        m.step(batch())
    metrics = m.on_epoch_end(0, None)
    for k in MODS:
        assert m.traces[k] == [pytest.approx(np.mean(expected[k]), abs=1e-12)]
        assert metrics[f"fisher_trace_{k}"].item() == pytest.approx(np.mean(expected[k]), rel=1e-6)  # logged in fp32


# --- scores and the coefficient ----------------------------------------------------------------


def test_multiclass_scores_are_the_true_class_probability_mean_or_sum_over_present_samples():
    logits = {"ehr": torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 3.0]], dtype=F64),
              "tabular": torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [9.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)}
    p = {k: torch.softmax(v, 1).numpy() for k, v in logits.items()}
    true = {k: p[k][np.arange(4), Y.numpy()] for k in MODS}
    w = {k: PRESENT[k].numpy() for k in MODS}
    mean = method_for(scalar_model()).scores(logits, PRESENT, Y)
    total = method_for(scalar_model(), score_reduction="sum").scores(logits, PRESENT, Y)
    for i, k in enumerate(MODS):
        assert mean[i].item() == pytest.approx(true[k][w[k]].mean())
        assert total[i].item() == pytest.approx(true[k][w[k]].sum())


def test_sigmoid_score_is_the_match_score_summed_or_averaged_over_labels_and_samples():
    logits = {"ehr": torch.tensor([[0.0, 2.0], [-1.0, 1.0], [3.0, 0.0], [0.5, -0.5]], dtype=F64),
              "tabular": torch.tensor([[1.0, 1.0], [0.0, -2.0], [-3.0, 4.0], [2.0, 0.0]], dtype=F64)}
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], dtype=F64)
    model = scalar_model(2)
    total = method_for(model, "multilabel", score_reduction="sum").scores(logits, PRESENT, y)
    mean = method_for(model, "multilabel").scores(logits, PRESENT, y)
    for i, k in enumerate(MODS):
        p = 1 / (1 + np.exp(-logits[k].numpy()))
        match = y.numpy() * p + (1 - y.numpy()) * (1 - p)  # [B, K]
        w = PRESENT[k].numpy()
        assert total[i].item() == pytest.approx(match[w].sum())  # S_m = sum_i sum_c [y p + (1-y)(1-p)]
        assert mean[i].item() == pytest.approx(match[w].mean())


def test_only_the_leader_in_its_window_and_strictly_ahead_is_regulated():
    m = method_for(scalar_model(), alpha={"ehr": 0.95, "tabular": 0.1})
    m.window = {"ehr": True, "tabular": True}
    beta = m.coefficients(torch.tensor([0.7, 0.4], dtype=F64))
    assert beta.tolist() == pytest.approx([0.95 * math.exp(math.tanh(0.3)), 0.0])
    beta = m.coefficients(torch.tensor([0.2, 0.9], dtype=F64))
    assert beta.tolist() == pytest.approx([0.0, 0.1 * math.exp(math.tanh(0.7))])
    assert m.coefficients(torch.tensor([0.5, 0.5], dtype=F64)).tolist() == [0.0, 0.0]  # a tie: nobody
    m.window = {"ehr": False, "tabular": True}
    assert m.coefficients(torch.tensor([0.7, 0.4], dtype=F64)).tolist() == [0.0, 0.0]  # leader out of window


def test_three_modalities_use_the_gap_to_the_runner_up():
    encoders = {k: ScalarEncoder(1.0, 0.0) for k in ("ehr", "tabular", "mri")}
    m = method_for(FusionModel(encoders, 3).double(), alpha=0.5)
    beta = m.coefficients(torch.tensor([0.3, 0.8, 0.6], dtype=F64))
    assert beta.tolist() == pytest.approx([0.0, 0.5 * math.exp(math.tanh(0.2)), 0.0])


# --- the regulariser's gradient ----------------------------------------------------------------


def test_regulariser_adds_beta_times_the_distance_from_the_epoch_start_to_the_leaders_gradient():
    model, twin = scalar_model(), scalar_model()
    m = method_for(model, alpha=0.8)
    m.on_epoch_start(0, None)  # theta^0 = the initial encoders; epoch 0 is in the window
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # move both models away from theta^0 (as earlier steps of the epoch would)
        for net in (model, twin):
            net.encoders["ehr"].a += 0.3
            net.encoders["ehr"].c -= 0.2
            net.encoders["tabular"].a -= 0.1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = m.step(batch())

    # the hand-computed scores from the twin's unimodal heads decide the leader and beta
    out = twin(X, PRESENT)
    s = {}
    for k in MODS:
        p = torch.softmax(out.unimodal[k].detach(), 1).numpy()[np.arange(4), Y.numpy()]
        s[k] = p[PRESENT[k].numpy()].mean()
    lead, other = max(MODS, key=s.get), min(MODS, key=s.get)
    beta = 0.8 * math.exp(math.tanh(s[lead] - s[other]))
    assert metrics[f"beta_{lead}"].item() == pytest.approx(beta) and metrics[f"beta_{other}"].item() == 0.0
    METHODS["late_fusion"](twin, torch.optim.SGD(twin.parameters(), lr=1.0), "multiclass").step(batch())
    for name, p in model.named_parameters():
        late = dict(twin.named_parameters())[name].detach()
        if name.startswith(f"encoders.{lead}."):
            # SGD(lr=1): theta <- theta - (g + beta (theta - theta^0))
            expected = late - beta * (before[name] - anchor[name])
            torch.testing.assert_close(p.detach(), expected, atol=1e-12, rtol=0)
        else:
            torch.testing.assert_close(p.detach(), late, atol=1e-12, rtol=0)


# --- reductions, state and runs --------------------------------------------------------------------

SPEC = {"ehr": {"name": "ehr_transformer", "d_model": 16, "nhead": 2, "num_layers": 1, "dropout": 0.5},
        "cxr": {"name": "small_cnn", "channels": [4, 8], "out_dim": 8}}


def cnn_batch(seed=0, b=8):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": {"ehr": torch.randn(b, 48, 24, generator=g), "cxr": torch.rand(b, 1, 16, 16, generator=g)},
            "present": {"ehr": torch.ones(b, dtype=torch.bool), "cxr": torch.tensor([1, 0, 1, 1, 0, 1, 1, 1]).bool()},
            "y": (torch.rand(b, 3, generator=g) > 0.5).float()}


def cnn_model():
    torch.manual_seed(0)
    return build_model(SPEC, ["ehr", "cxr"], {"ehr": (48, 24), "cxr": (1, 16, 16)}, 3, method="inforeg")


def run_epochs(method, epochs=3, steps=2):
    for epoch in range(epochs):
        method.on_epoch_start(epoch, None)
        for s in range(steps):
            method.step(cnn_batch(seed=10 * epoch + s))
        method.on_epoch_end(epoch, None)


def test_with_alpha_zero_inforeg_is_late_fusion():
    a, b = cnn_model(), cnn_model()
    torch.manual_seed(1)
    run_epochs(InfoReg(a, torch.optim.SGD(a.parameters(), lr=0.1), "multilabel", alpha=0.0))
    late = METHODS["late_fusion"](b, torch.optim.SGD(b.parameters(), lr=0.1), "multilabel")
    torch.manual_seed(1)
    for epoch in range(3):
        for s in range(2):
            late.step(cnn_batch(seed=10 * epoch + s))
    for pa, pb in zip(list(a.parameters()) + list(a.buffers()), list(b.parameters()) + list(b.buffers()), strict=True):
        assert torch.equal(pa, pb)


def test_state_round_trip_continues_identically():
    a, b = cnn_model(), cnn_model()
    first = InfoReg(a, torch.optim.SGD(a.parameters(), lr=0.1), "multilabel", history=2)
    run_epochs(first, epochs=2)
    first.on_epoch_start(2, None)
    first.step(cnn_batch(seed=99))
    b.load_state_dict(a.state_dict())
    second = InfoReg(b, torch.optim.SGD(b.parameters(), lr=0.1), "multilabel", history=2)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.traces == first.traces and second.window == first.window and second.steps == 1
    for k in ("ehr", "cxr"):
        for t1, t2 in zip(first.anchor[k], second.anchor[k], strict=True):
            assert torch.equal(t1, t2)
    torch.manual_seed(4)  # the same dropout masks for both
    m1 = first.step(cnn_batch(seed=100))
    torch.manual_seed(4)
    m2 = second.step(cnn_batch(seed=100))
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    assert first.on_epoch_end(2, None).keys() == second.on_epoch_end(2, None).keys()
    assert first.traces == second.traces


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("inforeg-cohorts")
    return {"multilabel": write_cohort(root / "mimic-phenotype", "mimic"),
            "binary": write_binary_cohort(root / "mimic-mortality"),
            "multiclass": write_cohort(root / "adni", "adni")}


@pytest.mark.parametrize("task_type", ["multilabel", "binary", "multiclass"])
def test_inforeg_trains_on_every_task_type(cohorts, tmp_path, task_type):
    summary = fit(run_spec(cohorts[task_type], "inforeg", tmp_path / "run"), track=False)
    assert summary["epochs_run"] == 2 and summary["best_val_metric"] is not None


def test_killed_and_resumed_inforeg_run_ends_like_an_uninterrupted_one(cohorts, tmp_path):
    cohort = cohorts["multilabel"]
    opts = {"history": 1, "threshold": 0.0}  # the window changes after epoch 1: the traces must resume
    fit(run_spec(cohort, "inforeg", tmp_path / "full", epochs=3, **opts), track=False)
    with pytest.raises(StopTraining):
        fit(run_spec(cohort, "inforeg", tmp_path / "killed", epochs=3, **opts), track=False, stop_after_epoch=1)
    fit(run_spec(cohort, "inforeg", tmp_path / "killed", epochs=3, **opts), resume=True, track=False)
    assert json.loads((tmp_path / "killed" / "history.json").read_text()) == json.loads(
        (tmp_path / "full" / "history.json").read_text())
    a, _ = load_trained_model(tmp_path / "full")
    b, _ = load_trained_model(tmp_path / "killed")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    full = torch.load(tmp_path / "full" / "checkpoint_last.pt", weights_only=False)["method"]
    killed = torch.load(tmp_path / "killed" / "checkpoint_last.pt", weights_only=False)["method"]
    assert full["traces"] == killed["traces"] and len(full["traces"]["ehr"]) == 3


def test_epoch_quantities_reach_mlflow(cohorts, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    spec = run_spec(cohorts["multiclass"], "inforeg", tmp_path / "tracked")
    spec.settings.log_every = 1
    summary = fit(spec, track=True)
    mlflow.set_tracking_uri(uri)
    metrics = mlflow.MlflowClient().get_run(summary["mlflow_run_id"]).data.metrics
    for key in ("epoch/fisher_trace_mri", "epoch/in_window_tabular", "epoch/information_rate_mri",
                "step/beta_tabular", "step/score_mri", "step/regulated"):
        assert key in metrics, key
