"""DrFuse: loss terms computed by hand on a tiny batch, attention, missing CXR, exact resume."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from clinfuse.etl.errors import ConfigError
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.drfuse import DrFuseModel, logit_pool, per_label_losses

F64 = torch.float64


class LinearEncoder(nn.Module):
    def __init__(self, n_in: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Linear(n_in, out_dim, dtype=F64)

    def forward(self, x):
        return self.net(x)


def tiny_model(k: int = 2, seed: int = 0) -> DrFuseModel:
    torch.manual_seed(seed)
    return DrFuseModel({"ehr": LinearEncoder(3, 4), "cxr": LinearEncoder(5, 6)}, num_outputs=k, width=4).double()


PRESENT_CXR = (True, True, False)


def tiny_batch(k: int = 2, multiclass: bool = False):
    g = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 2, 1]) if multiclass else (torch.rand(3, k, generator=g) > 0.5).to(F64)
    return {"inputs": {"ehr": torch.randn(3, 3, generator=g, dtype=F64), "cxr": torch.randn(3, 5, generator=g, dtype=F64)},
            "present": {"ehr": torch.ones(3, dtype=torch.bool), "cxr": torch.tensor(PRESENT_CXR)}, "y": y}


def np_(t):
    return t.detach().numpy()


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bce(logits, y):
    p = sigmoid(logits)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_logit_pooling_is_the_logit_of_the_mean_probability():
    a, b = torch.tensor([0.3, -2.0, 5.0], dtype=F64), torch.tensor([1.1, 0.4, -3.0], dtype=F64)
    expected = np.log((sigmoid(np_(a)) + sigmoid(np_(b))) / 2 / (1 - (sigmoid(np_(a)) + sigmoid(np_(b))) / 2))
    assert np.allclose(np_(logit_pool(a, b)), expected, atol=1e-12)


def test_every_loss_term_matches_a_hand_computation_on_a_tiny_batch():
    model, batch = tiny_model(), tiny_batch()
    method = METHODS["drfuse"](model, torch.optim.SGD(model.parameters(), lr=0.1), "multilabel")
    out = model(batch["inputs"], batch["present"])
    terms = {k: float(v.detach()) for k, v in method.losses(out, batch).items()}
    y = np_(batch["y"])
    paired = np.array(PRESENT_CXR)

    # prediction losses: label mean, then sample mean; CXR over the paired rows only
    assert math.isclose(terms["fuse"], bce(np_(out.fused), y).mean(), abs_tol=1e-12)
    assert math.isclose(terms["shared"], bce(np_(out.extras["shared_logits"]), y).mean(), abs_tol=1e-12)
    assert math.isclose(terms["ehr"], bce(np_(out.unimodal["ehr"]), y).mean(), abs_tol=1e-12)
    assert math.isclose(terms["cxr"], bce(np_(out.unimodal["cxr"]), y)[paired].mean(), abs_tol=1e-12)

    # JSD of per-dimension Bernoullis sigma(h_ehr), sigma(h_cxr), mixture (p + q) / 2, over paired rows
    p, q = sigmoid(np_(out.extras["projected_ehr"])), sigmoid(np_(out.extras["projected_cxr"]))
    m = (p + q) / 2

    def kl(u, v):
        return u * np.log(u / v) + (1 - u) * np.log((1 - u) / (1 - v))

    jsd = (0.5 * kl(p, m) + 0.5 * kl(q, m)).sum(1)
    assert math.isclose(terms["jsd"], jsd[paired].mean(), abs_tol=1e-12)

    # |cos(shared, distinct)| per modality, over the rows where it is present
    for mod, rows in (("ehr", np.ones(3, bool)), ("cxr", paired)):
        s, r = np_(out.extras[f"shared_{mod}"]), np_(out.features[mod])
        cos = np.abs((s * r).sum(1) / np.linalg.norm(s, axis=1) / np.linalg.norm(r, axis=1))
        assert math.isclose(terms[f"orth_{mod}"], cos[rows].mean(), abs_tol=1e-12)

    # ranking: per paired row and label, the branch with the lower loss should get more attention
    alpha = np_(out.extras["attention"])  # [B, K, (ehr, shared, cxr)]
    losses = {"ehr": bce(np_(out.unimodal["ehr"]), y), "cxr": bce(np_(out.unimodal["cxr"]), y),
              "shared": bce(np_(out.extras["shared_logits"]), y)}
    column = {"ehr": 0, "shared": 1, "cxr": 2}
    pair_losses = []
    for x, z in (("cxr", "ehr"), ("shared", "ehr"), ("shared", "cxr")):
        hinges = []
        for i in np.flatnonzero(paired):
            for c in range(2):
                t = np.sign(losses[z][i, c] - losses[x][i, c])
                hinges.append(max(0.0, -t * (alpha[i, c, column[x]] - alpha[i, c, column[z]])))
        positive = sum(h > 0 for h in hinges)
        pair_losses.append(sum(hinges) / max(positive, 1))
    assert math.isclose(terms["rank"], np.mean(pair_losses), abs_tol=1e-12)

    total = float(method.total(method.losses(out, batch)).detach())
    assert math.isclose(total, sum(terms.values()), abs_tol=1e-12)  # every coefficient is 1 (the paper's)


def test_the_shared_representation_pools_both_modalities_and_stands_in_for_a_missing_film():
    model, batch = tiny_model().eval(), tiny_batch()
    out = model(batch["inputs"], batch["present"])
    h_e, h_c = np_(out.extras["projected_ehr"]), np_(out.extras["projected_cxr"])
    mean = (sigmoid(h_e) + sigmoid(h_c)) / 2
    assert np.allclose(np_(out.extras["shared"])[:2], np.log(mean / (1 - mean))[:2], atol=1e-12)
    assert np.allclose(np_(out.extras["shared"])[2], h_e[2], atol=1e-12)


def test_attention_weights_sum_to_one_per_label_and_mask_the_missing_film():
    model, batch = tiny_model(k=3).eval(), tiny_batch(k=3)
    alpha = model(batch["inputs"], batch["present"]).extras["attention"]
    assert alpha.shape == (3, 3, 3)
    assert torch.allclose(alpha.sum(-1), torch.ones(3, 3, dtype=F64), atol=1e-12)
    assert torch.all(alpha[2, :, 2] == 0) and torch.all(alpha[:2] > 0)


def test_attention_output_is_computed_per_label_from_its_own_key():
    model, batch = tiny_model(k=2).eval(), tiny_batch(k=2)
    out = model(batch["inputs"], batch["present"])
    d = model.width
    w, b = np_(model.attention_in.weight), np_(model.attention_in.bias)
    wf, bf = np_(model.final_head.weight), np_(model.final_head.bias)
    for i, paired in enumerate(PRESENT_CXR):
        tokens = [np_(out.features["ehr"][i]), np_(out.extras["shared"][i]), np_(out.features["cxr"][i])]
        proj = [(w @ t + b).reshape(4, d) for t in tokens]  # rows: query, value, key label 0, key label 1
        used = [0, 1, 2] if paired else [0, 1]
        query = np.mean([proj[t][0] for t in used], axis=0)
        for c in range(2):
            scores = np.array([query @ proj[t][2 + c] / math.sqrt(d) for t in used])
            weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
            feat = sum(wt * proj[t][1] for wt, t in zip(weights, used, strict=True))
            assert math.isclose(float(out.fused[i, c].detach()), wf[c] @ feat + bf[c], abs_tol=1e-12)


def test_output_of_a_stay_without_a_film_does_not_depend_on_the_image_tensor():
    model, batch = tiny_model().eval(), tiny_batch()
    other = copy.deepcopy(batch)
    other["inputs"]["cxr"][2] = 1e3
    a = model(batch["inputs"], batch["present"])
    b = model(other["inputs"], other["present"])
    assert torch.equal(a.fused[2], b.fused[2]) and torch.equal(a.extras["shared_logits"][2], b.extras["shared_logits"][2])


def test_a_missing_film_adds_no_cxr_jsd_orthogonality_or_ranking_gradient():
    model, batch = tiny_model(), tiny_batch()
    method = METHODS["drfuse"](model, torch.optim.SGD(model.parameters(), lr=0.1), "multilabel")
    x = batch["inputs"]["cxr"].clone().requires_grad_()
    out = model({**batch["inputs"], "cxr": x}, batch["present"])
    terms = method.losses(out, batch)
    for name in ("cxr", "orth_cxr", "jsd", "rank"):
        (g,) = torch.autograd.grad(terms[name], x, retain_graph=True, allow_unused=True)
        assert g is None or torch.all(g[2] == 0), name


def test_multiclass_per_class_losses_are_one_vs_rest_bce_of_softmax_probabilities():
    logits = torch.tensor([[0.0, math.log(2.0), 0.0]], dtype=F64)  # p = (0.25, 0.5, 0.25)
    got = per_label_losses(logits, torch.tensor([1]), "multiclass")
    expected = [-math.log(0.75), -math.log(0.5), -math.log(0.75)]
    assert np.allclose(np_(got)[0], expected, atol=1e-7)


def test_multiclass_prediction_is_a_softmax_over_class_logits_and_trains():
    model, batch = tiny_model(k=3), tiny_batch(k=3, multiclass=True)
    method = METHODS["drfuse"](model, torch.optim.SGD(model.parameters(), lr=0.1), "multiclass")
    metrics = method.step(batch)
    assert torch.isfinite(metrics["loss_total"]) and metrics["loss_rank"] >= 0


def test_three_modalities_are_refused_in_one_line():
    encoders = {m: LinearEncoder(2, 2) for m in ("ehr", "cxr", "mri")}
    with pytest.raises(ConfigError, match="two modalities"):
        DrFuseModel(encoders, 2)


def test_the_distinct_branch_starts_from_different_weights_than_the_shared_one():
    model = tiny_model()
    assert not torch.equal(model.encoders["ehr"].net.weight, model.distinct_encoders["ehr"].net.weight)


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    from clinfuse.pipeline.inference import load_trained_model
    from clinfuse.pipeline.trainer import StopTraining, fit
    from tests.fixtures.cohorts import write_cohort
    from tests.training.test_trainer import spec

    cohort = write_cohort(tmp_path / "mimic-phenotype", "mimic", n=32, missing_image=0.5)
    full = fit(spec(cohort, "drfuse", tmp_path / "full", epochs=2), track=False)
    with pytest.raises(StopTraining):
        fit(spec(cohort, "drfuse", tmp_path / "killed", epochs=2), track=False, stop_after_epoch=1)
    resumed = fit(spec(cohort, "drfuse", tmp_path / "killed", epochs=2), resume=True, track=False)
    assert resumed["best_val_metric"] == full["best_val_metric"]
    assert json.loads((tmp_path / "killed" / "history.json").read_text()) == json.loads(
        (tmp_path / "full" / "history.json").read_text())
    a, _ = load_trained_model(tmp_path / "full")
    b, _ = load_trained_model(tmp_path / "killed")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_trains_on_the_multiclass_tabular_and_mri_cohort_and_exports(tmp_path):
    from clinfuse.models.export import ExportableFusion
    from clinfuse.pipeline.data import load_cohort
    from clinfuse.pipeline.inference import load_trained_model, predict_split
    from clinfuse.pipeline.trainer import fit
    from tests.fixtures.cohorts import write_cohort
    from tests.training.test_trainer import spec

    cohort = write_cohort(tmp_path / "adni", "adni", n=24, missing_image=0.4)
    fit(spec(cohort, "drfuse", tmp_path / "run", epochs=1), track=False)
    rows, probs = predict_split(tmp_path / "run", load_cohort(cohort), "test")
    assert probs.shape == (len(rows), 3) and abs(probs.sum(1) - 1).max() < 1e-5
    model, _ = load_trained_model(tmp_path / "run")
    wrapped = ExportableFusion(model, "multiclass").eval()
    args = (torch.randn(2, 6), torch.rand(2, 1, 8, 8, 8), torch.ones(2), torch.tensor([1.0, 0.0]))
    exported = torch.export.export(wrapped, args)
    assert torch.allclose(exported.module()(*args), wrapped(*args), atol=1e-6)
