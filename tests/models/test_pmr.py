"""PMR pinned to hand computation (float64 scalar model), its reductions, its state, and runs.

Encoder m is z_m = a_m x_m + c_m (one feature), so a prototype is a number and
d_{m,k} = |z_m - c_{m,k}|; every loss of the step is written out in numpy below,
and the step's update under SGD(lr=1) is compared with the numerical gradient of
that loss (coefficients held at their hand-computed values: they are detached).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from clinfuse.models.build import build_model
from clinfuse.models.fusion import FusionModel
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.pmr import PMR
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.data import SplitTensors
from clinfuse.pipeline.inference import load_trained_model
from clinfuse.pipeline.trainer import StopTraining, fit
from tests.fixtures.cohorts import write_cohort
from tests.models.tiny_fusion import ScalarEncoder

from .balancing_cohorts import run_spec, write_binary_cohort

F64 = torch.float64
MODS = ["ehr", "tabular"]  # two non-image modalities: inputs are used as given
CNN_MODS = ["ehr", "cxr"]


def scalar_model(k: int) -> FusionModel:
    model = FusionModel({"ehr": ScalarEncoder(0.8, -0.3), "tabular": ScalarEncoder(-0.5, 0.4)}, num_outputs=k).double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 or p.shape[0] == k:  # heads (the encoders keep their values)
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5)
    return model


X = {"ehr": torch.tensor([[0.5], [-1.0], [2.0], [0.3], [1.2]], dtype=F64),
     "tabular": torch.tensor([[1.5], [0.2], [-0.7], [1.1], [-0.4]], dtype=F64)}
PRESENT = {"ehr": torch.ones(5, dtype=torch.bool), "tabular": torch.tensor([True, True, False, True, True])}


def make_batch(task_type):
    y = torch.tensor([0, 2, 1, 1, 0]) if task_type == "multiclass" else torch.tensor([[1.0], [0.0], [1.0], [0.0], [0.0]], dtype=F64)
    return {"inputs": X, "present": PRESENT, "y": y}


PROTOS = {"multiclass": {"ehr": [[-0.2], [0.6], [1.1]], "tabular": [[-1.0], [0.1], [0.35]]},
          "binary": {"ehr": [[0.2], [0.9]], "tabular": [[-0.6], [0.5]]}}


# --- numpy reference --------------------------------------------------------------------------


def log_softmax(t):
    t = t - t.max(1, keepdims=True)
    return t - np.log(np.exp(t).sum(1, keepdims=True))


def task_ce(logits, y, task_type, w=None):
    if task_type == "multiclass":
        per = -log_softmax(logits)[np.arange(len(y)), y]
    else:
        per = (np.logaddexp(0, logits) - y * logits).mean(1)
    w = np.ones(len(per)) if w is None else w
    return (per * w).sum() / max(w.sum(), 1.0)


def np_terms(p, task_type, protos):
    """L_total and, per modality, PCE, entropy and score (numpy, float64)."""
    y = make_batch(task_type)["y"].numpy()
    cls = y if task_type == "multiclass" else y[:, 0].astype(int)
    w = {m: PRESENT[m].numpy().astype(float) for m in MODS}
    z = {m: p[f"encoders.{m}.a"][0] * X[m].numpy()[:, 0] + p[f"encoders.{m}.c"][0] for m in MODS}
    fused = sum(np.outer(z[m] * w[m], p["fusion_head.weight"][:, i]) for i, m in enumerate(MODS)) + p["fusion_head.bias"]
    l_total = task_ce(fused, y, task_type)
    pce, ent, score = {}, {}, {}
    for m in MODS:
        u = np.outer(z[m], p[f"unimodal_heads.{m}.weight"][:, 0]) + p[f"unimodal_heads.{m}.bias"]
        l_total += task_ce(u, y, task_type, w[m])
        logp = log_softmax(-np.abs(z[m][:, None] - np.array(protos[m])[:, 0][None, :]))
        nll = -logp[np.arange(5), cls]
        pce[m] = (nll * w[m]).sum() / w[m].sum()
        ent[m] = (-(np.exp(logp) * logp).sum(1) * w[m]).sum() / w[m].sum()
        score[m] = (np.exp(-nll) * w[m]).sum() / w[m].sum()
    return l_total, pce, ent, score


def numpy_params(model):
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


def numerical_grad(f, p, h=1e-6):
    grads = {}
    for name, value in p.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            up, down = copy.deepcopy(p), copy.deepcopy(p)
            up[name][idx] += h
            down[name][idx] -= h
            g[idx] = (f(up) - f(down)) / (2 * h)
        grads[name] = g
    return grads


def pmr_method(model, task_type, **options):
    method = PMR(model, torch.optim.SGD(model.parameters(), lr=1.0), task_type, **options)
    method.prototypes = {m: torch.tensor(PROTOS[task_type][m], dtype=F64) for m in MODS}
    return method


# --- the step by hand ----------------------------------------------------------------------------


@pytest.mark.parametrize("task_type", ["multiclass", "binary"])
def test_prototype_losses_scores_and_ratio_match_numpy(task_type):
    model = scalar_model(3 if task_type == "multiclass" else 1)
    method = pmr_method(model, task_type)
    _, pce, ent, score = np_terms(numpy_params(model), task_type, PROTOS[task_type])
    out = model(X, PRESENT)
    got_pce, got_ent, got_score = method.prototype_terms(out.features, PRESENT, make_batch(task_type)["y"])
    for m in MODS:
        assert got_pce[m].item() == pytest.approx(pce[m], abs=1e-12)
        assert got_ent[m].item() == pytest.approx(ent[m], abs=1e-12)
        assert got_score[m].item() == pytest.approx(score[m], abs=1e-12)
    b, dominant, rho = method.coefficients(torch.tensor([score["ehr"], score["tabular"]]))
    lead = max(MODS, key=lambda m: score[m])
    assert MODS[int(dominant)] == lead
    for i, m in enumerate(MODS):
        assert rho[i].item() == pytest.approx(score[lead] / score[m], abs=1e-12)
        assert b[i].item() == pytest.approx(min(max(score[lead] / score[m] - 1, 0), 1), abs=1e-12)


def test_coefficient_is_zero_for_the_leader_and_clipped_at_one():
    b, dominant, rho = PMR.coefficients(torch.tensor([0.6, 0.4, 0.2], dtype=F64))
    assert int(dominant) == 0
    assert rho.tolist() == pytest.approx([1.0, 1.5, 3.0])
    assert b.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert PMR.coefficients(torch.tensor([0.5, 0.5]))[0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("task_type", ["multiclass", "binary"])
@pytest.mark.parametrize("epoch", [0, 5])  # 0: PCE and PER; 5: PCE only (per_epochs=3)
def test_step_is_sgd_on_the_papers_loss(task_type, epoch):
    k = 3 if task_type == "multiclass" else 1
    model = scalar_model(k)
    alpha, mu = 1.7, 0.6
    method = pmr_method(model, task_type, alpha=alpha, mu_per=mu, per_epochs=3)
    method.epoch = epoch
    p0 = numpy_params(model)
    _, _, _, score = np_terms(p0, task_type, PROTOS[task_type])
    lead = max(MODS, key=lambda m: score[m])
    b = {m: min(max(score[lead] / score[m] - 1, 0), 1) for m in MODS}

    def loss(p):
        l_total, pce, ent, _ = np_terms(p, task_type, PROTOS[task_type])
        value = l_total + alpha * sum(b[m] * pce[m] for m in MODS)
        if epoch < 3:
            value -= mu * max(b.values()) * ent[lead]
        return value

    grads = numerical_grad(loss, p0)
    metrics = method.step(make_batch(task_type))
    assert metrics["loss_pmr"].item() == pytest.approx(loss(p0), abs=1e-10)
    assert metrics["per_active"].item() == float(epoch < 3)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), p0[name] - grads[name], atol=1e-6, err_msg=name)


def test_outside_the_window_the_step_is_late_fusion():
    a, b = scalar_model(3), scalar_model(3)
    method = pmr_method(a, "multiclass", start_epoch=2, end_epoch=4)
    method.epoch = 5
    method.step(make_batch("multiclass"))
    METHODS["late_fusion"](b, torch.optim.SGD(b.parameters(), lr=1.0), "multiclass").step(make_batch("multiclass"))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


# --- prototypes --------------------------------------------------------------------------------


def split_of(task_type, present=PRESENT):
    y = make_batch(task_type)["y"]
    return SplitTensors(np.arange(5), {m: X[m] for m in MODS}, dict(present), y)


def test_prototypes_are_class_means_of_present_samples_then_smoothed():
    model = scalar_model(3)
    method = PMR(model, torch.optim.SGD(model.parameters(), lr=1.0), "multiclass",
                 prototype_fraction=1.0, prototype_momentum=0.25)
    method.on_epoch_start(0, split_of("multiclass"))
    y = np.array([0, 2, 1, 1, 0])
    z = {m: model.encoders[m].a.item() * X[m].numpy()[:, 0] + model.encoders[m].c.item() for m in MODS}
    w = {m: PRESENT[m].numpy() for m in MODS}
    first = {m: np.array([z[m][(y == k) & w[m]].mean() for k in range(3)]) for m in MODS}
    for m in MODS:
        np.testing.assert_allclose(method.prototypes[m][:, 0].numpy(), first[m], atol=1e-12)
    with torch.no_grad():
        model.encoders["ehr"].c += 1.0  # the features move by 1: the new means too
    method.on_epoch_start(1, split_of("multiclass"))
    np.testing.assert_allclose(method.prototypes["ehr"][:, 0].numpy(), 0.75 * (first["ehr"] + 1) + 0.25 * first["ehr"])
    np.testing.assert_allclose(method.prototypes["tabular"][:, 0].numpy(), first["tabular"], atol=1e-12)


def test_binary_prototypes_are_the_negative_and_positive_class_means():
    model = scalar_model(1)
    method = PMR(model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", prototype_fraction=1.0)
    method.on_epoch_start(0, split_of("binary"))
    z = model.encoders["ehr"].a.item() * X["ehr"].numpy()[:, 0] + model.encoders["ehr"].c.item()
    y = np.array([1, 0, 1, 0, 0])
    assert method.prototypes["ehr"].shape == (2, 1)
    np.testing.assert_allclose(method.prototypes["ehr"][:, 0].numpy(), [z[y == 0].mean(), z[y == 1].mean()])


def test_a_class_missing_a_modality_in_the_subset_falls_back_to_the_whole_split():
    # fraction 0.2 takes one sample per class; class 1 = samples {2, 3} and sample 2 has no tabular row.
    model = scalar_model(3)
    method = PMR(model, torch.optim.SGD(model.parameters(), lr=1.0), "multiclass", prototype_fraction=0.2)
    protos = method.compute_prototypes(split_of("multiclass"), torch.Generator().manual_seed(0))
    z3 = model.encoders["tabular"].a.item() * X["tabular"][3, 0].item() + model.encoders["tabular"].c.item()
    assert protos["tabular"][1, 0].item() == pytest.approx(z3)  # the only class-1 sample with a tabular row
    for seed in range(4):  # whichever sample the subset draws
        again = method.compute_prototypes(split_of("multiclass"), torch.Generator().manual_seed(seed))
        assert again["tabular"][1, 0].item() == pytest.approx(z3)
    never = dict(PRESENT, tabular=torch.tensor([True, True, False, False, True]))  # class 1 never has tabular
    with pytest.raises(ValueError, match="no training sample of class 1 has modality 'tabular'"):
        method.compute_prototypes(split_of("multiclass", never), torch.Generator().manual_seed(0))


SPEC = {"ehr": {"name": "ehr_transformer", "d_model": 16, "nhead": 2, "num_layers": 1, "dropout": 0.5},
        "cxr": {"name": "small_cnn", "channels": [4, 8], "out_dim": 8}}


def cnn_batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": {"ehr": torch.randn(b, 48, 24, generator=g), "cxr": torch.rand(b, 1, 16, 16, generator=g)},
            "present": {"ehr": torch.ones(b, dtype=torch.bool), "cxr": torch.tensor([1, 0, 1, 1, 0, 1, 1, 1]).bool()},
            "y": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])}


def cnn_split(batch):
    """The batch as a training split (images stored as uint8 [N, S, S], as the trainer holds them)."""
    images = (batch["inputs"]["cxr"][:, 0] * 255).round().to(torch.uint8)
    return SplitTensors(np.arange(8), {"ehr": batch["inputs"]["ehr"], "cxr": images}, batch["present"], batch["y"])


def cnn_model():
    torch.manual_seed(0)
    return build_model(SPEC, CNN_MODS, {"ehr": (48, 24), "cxr": (1, 16, 16)}, 3, method="pmr", task_type="multiclass")


def test_prototype_pass_leaves_batchnorm_statistics_dropout_rng_and_train_mode_alone():
    model = cnn_model()
    b = cnn_batch()
    split = cnn_split(b)
    buffers = [t.clone() for t in model.buffers()]
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    PMR(model, torch.optim.SGD(model.parameters(), lr=0.1), "multiclass").on_epoch_start(0, split)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
    for before, after in zip(buffers, model.buffers(), strict=True):
        assert torch.equal(before, after)


def test_with_alpha_and_mu_zero_pmr_is_late_fusion_on_a_cnn_with_dropout_and_batchnorm():
    a, b = cnn_model(), cnn_model()
    batch = cnn_batch()
    split = cnn_split(batch)
    pmr = PMR(a, torch.optim.SGD(a.parameters(), lr=0.1), "multiclass", alpha=0.0, mu_per=0.0)
    late = METHODS["late_fusion"](b, torch.optim.SGD(b.parameters(), lr=0.1), "multiclass")
    torch.manual_seed(11)
    pmr.on_epoch_start(0, split)
    for s in range(2):
        pmr.step(cnn_batch(seed=s))
    torch.manual_seed(11)
    for s in range(2):
        late.step(cnn_batch(seed=s))
    for pa, pb in zip(list(a.parameters()) + list(a.buffers()), list(b.parameters()) + list(b.buffers()), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_state_round_trip_restores_prototypes_and_epoch():
    a, b = cnn_model(), cnn_model()
    batch = cnn_batch()
    split = cnn_split(batch)
    first = PMR(a, torch.optim.SGD(a.parameters(), lr=0.1), "multiclass")
    first.on_epoch_start(0, split)
    first.step(batch)
    first.on_epoch_start(1, split)
    second = PMR(b, torch.optim.SGD(b.parameters(), lr=0.1), "multiclass")
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.epoch == 1
    for m in CNN_MODS:
        assert torch.equal(second.prototypes[m], first.prototypes[m])


# --- tasks and runs ----------------------------------------------------------------------------


def test_pmr_refuses_a_multilabel_task_and_says_why():
    with pytest.raises(ValueError, match="PMR needs single-label classes for its prototypes.*not defined for multilabel"):
        PMR.check_task("multilabel")
    PMR.check_task("binary")
    PMR.check_task("multiclass")


def test_training_pmr_on_a_multilabel_cohort_is_a_one_line_error(tmp_path, capsys):
    cohort = write_cohort(tmp_path / "mimic-phenotype", "mimic")
    code = main(["train", "--cohort", str(cohort), "--method", "pmr", "--out", str(tmp_path / "run"), "--no-tracking"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "PMR needs single-label classes for its prototypes" in err and "multilabel" in err


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("pmr-cohorts")
    return {"binary": write_binary_cohort(root / "mimic-mortality"), "multiclass": write_cohort(root / "adni", "adni")}


@pytest.mark.parametrize("task_type", ["binary", "multiclass"])
def test_pmr_trains_on_binary_and_multiclass_cohorts(cohorts, tmp_path, task_type):
    summary = fit(run_spec(cohorts[task_type], "pmr", tmp_path / "run"), track=False)
    assert summary["epochs_run"] == 2 and summary["best_val_metric"] is not None


def test_killed_and_resumed_pmr_run_ends_like_an_uninterrupted_one(cohorts, tmp_path):
    cohort = cohorts["multiclass"]
    fit(run_spec(cohort, "pmr", tmp_path / "full", epochs=3, prototype_momentum=0.5), track=False)
    with pytest.raises(StopTraining):
        fit(run_spec(cohort, "pmr", tmp_path / "killed", epochs=3, prototype_momentum=0.5), track=False,
            stop_after_epoch=1)
    fit(run_spec(cohort, "pmr", tmp_path / "killed", epochs=3, prototype_momentum=0.5), resume=True, track=False)
    assert json.loads((tmp_path / "killed" / "history.json").read_text()) == json.loads(
        (tmp_path / "full" / "history.json").read_text())
    a, _ = load_trained_model(tmp_path / "full")
    b, _ = load_trained_model(tmp_path / "killed")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    full = torch.load(tmp_path / "full" / "checkpoint_last.pt", weights_only=False)["method"]
    killed = torch.load(tmp_path / "killed" / "checkpoint_last.pt", weights_only=False)["method"]
    for m in full["prototypes"]:
        assert torch.equal(full["prototypes"][m], killed["prototypes"][m])
