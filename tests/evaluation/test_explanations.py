"""Explanations by hand: modality Shapley values, reliance shares, cases by rule, the randomisation check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.evaluation.attributions import rank_correlation, select_cases, top_variables, variable_hour_map
from clinfuse.evaluation.reliance import differing_labels, reliance_shares, share_difference
from clinfuse.pipeline.modality_shapley import coalitions, modality_shapley
from clinfuse.pipeline.serving import ServedModel


def table_predict(seen: list):
    """p = 0.1 + 0.3 [a shown] + 0.2 [b shown] + 0.1 [a and b shown], one label; records what it was given."""
    def predict(inputs, present):
        seen.append(({m: x.clone() for m, x in inputs.items()}, {m: p.clone() for m, p in present.items()}))
        a, b = present["a"].double(), present["b"].double()
        return (0.1 + 0.3 * a + 0.2 * b + 0.1 * a * b)[:, None]
    return predict


def test_two_modalities_take_four_evaluations_and_split_the_interaction_equally():
    seen = []
    inputs = {"a": torch.ones(2, 3), "b": torch.full((2, 2), 5.0)}
    present = {"a": torch.tensor([True, True]), "b": torch.tensor([True, False])}
    phi, full, none = modality_shapley(table_predict(seen), inputs, present, ["a", "b"])
    assert len(seen) == 4 == len(coalitions(["a", "b"]))
    # patient 1: phi_a = 0.3 + 0.1 / 2, phi_b = 0.2 + 0.1 / 2; patient 2 has no b: b contributes exactly 0
    np.testing.assert_allclose(phi[:, :, 0].numpy(), [[0.35, 0.25], [0.3, 0.0]], atol=1e-6)
    np.testing.assert_allclose((phi.sum(1) - (full - none)).numpy(), 0.0, atol=1e-6)


def test_an_absent_modality_is_shown_to_the_model_as_zero_input_with_its_flag_false():
    seen = []
    inputs = {"a": torch.ones(1, 3), "b": torch.full((1, 2), 5.0)}
    modality_shapley(table_predict(seen), inputs, {"a": torch.tensor([True]), "b": torch.tensor([True])}, ["a", "b"])
    only_a = next(x for x, p in seen if bool(p["a"][0]) and not bool(p["b"][0]))
    assert torch.equal(only_a["a"], inputs["a"]) and not only_a["b"].any()


def test_three_modalities_are_exact_over_the_eight_coalitions():
    seen = []

    def predict(inputs, present):
        seen.append(1)
        a, b, c = (present[m].double() for m in "abc")
        return (0.05 + 0.2 * a + 0.1 * b + 0.3 * a * b * c)[:, None]

    x = {m: torch.zeros(1, 1) for m in "abc"}
    phi, _, _ = modality_shapley(predict, x, {m: torch.tensor([True]) for m in "abc"}, list("abc"))
    assert len(seen) == 8
    np.testing.assert_allclose(phi[0, :, 0].numpy(), [0.3, 0.2, 0.1], atol=1e-6)  # the 3-way term split in thirds


def test_late_fusion_contributions_use_its_own_prediction_rule():
    from clinfuse.pipeline.attributions import model_predict
    from tests.models.tiny_fusion import tiny_batch, tiny_model

    model = tiny_model(k=2).eval()
    batch = tiny_batch(k=2, task_type="multilabel")
    x, present = batch["inputs"], batch["present"]
    phi, full, _ = modality_shapley(model_predict(model, "fused", "multilabel"), x, present, ["a", "v"])

    def v(shown):
        with torch.no_grad():
            out = model({m: x[m] if m in shown else torch.zeros_like(x[m]) for m in x},
                        {m: present[m] & (m in shown) for m in x})
        return torch.sigmoid(out.fused).float()

    none = torch.sigmoid(model.fusion_head.bias.detach()).float().expand_as(full)  # every feature zeroed: the bias alone
    np.testing.assert_allclose(v(()).numpy(), none.numpy(), atol=1e-6)
    expected_a = 0.5 * (v(("a",)) - v(())) + 0.5 * (v(("a", "v")) - v(("v",)))
    np.testing.assert_allclose(phi[:, 0].numpy(), expected_a.numpy(), atol=1e-6)
    np.testing.assert_allclose(full.numpy(), v(("a", "v")).numpy(), atol=1e-6)


def test_reliance_share_is_a_ratio_of_mean_absolute_contributions_with_a_patient_bootstrap():
    # two patients (three rows: patient 7 has two stays), one label, two modalities
    phi = np.array([[[0.3], [-0.1]], [[0.1], [0.1]], [[-0.2], [0.2]]])
    out = reliance_shares(phi, np.array([7, 7, 8]), n_resamples=200, seed=0)
    np.testing.assert_allclose(out["share"][:, 0], [0.6 / 1.0, 0.4 / 1.0])
    np.testing.assert_allclose(out["mean_abs"][:, 0], [0.2, 0.4 / 3])
    # resampling whole patients: shares range between patient 8 alone (0.5) and patient 7 alone (4/6)
    assert 0.5 - 1e-9 <= out["ci_low"][0, 0] <= out["share"][0, 0] <= out["ci_high"][0, 0] <= 4 / 6 + 1e-9


def test_a_label_no_modality_moves_has_no_share_rather_than_a_made_up_one():
    out = reliance_shares(np.zeros((3, 2, 1)), np.arange(3), n_resamples=20)
    assert np.isnan(out["share"]).all() and np.isnan(out["ci_low"]).all()


def test_a_sentence_is_written_only_where_the_paired_difference_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 2, 2))
    more_cxr = base.copy()
    more_cxr[:, 1, 0] *= 3  # label 0: this method leans on the film three times as hard
    patients = np.arange(60)
    diffs = {"masam": share_difference(more_cxr, base, patients, 1, 300, 0),
             "same": share_difference(base, base, patients, 1, 300, 0)}
    shares = {m: reliance_shares(p, patients, 50)["share"][1] for m, p in
              (("masam", more_cxr), ("same", base), ("late_fusion", base))}
    sentences = differing_labels(diffs, ["Shock", "Sepsis"], "cxr", "late_fusion", shares, 0.95)
    assert len(sentences) == 1 and sentences[0].startswith("Shock: masam relies more on the CXR than late_fusion")


def test_cases_follow_the_three_rules_at_the_threshold():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.8, 0.1, 0.6, 0.7])
    assert select_cases(y, p, 0.5, 1) == [("top_true_positive", 0), ("top_false_positive", 2),
                                          ("missed_positive", 1)]
    assert select_cases(y, p, 0.5, 2)[:2] == [("top_true_positive", 0), ("top_true_positive", 4)]
    assert [r for r, _ in select_cases(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5, 1)] == []


def test_variables_gather_their_value_and_mask_channels_and_rank_by_size():
    attr = np.zeros((2, 4))  # [T, C] with channels hr, sbp, hr_mask, sbp_mask
    attr[:, 0], attr[:, 2], attr[:, 1] = 0.1, 0.05, -0.4
    names, heat = variable_hour_map(attr, ["hr", "sbp", "hr_mask", "sbp_mask"])
    assert names == ["hr", "sbp"]
    np.testing.assert_allclose(heat, [[0.15, 0.15], [-0.4, -0.4]])
    top = top_variables(heat.sum(-1), names, 2)
    assert [(v["variable"], v["direction"]) for v in top] == [("sbp", "lowers"), ("hr", "raises")]


def test_rank_correlation_is_spearmans_with_average_ranks():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(a, a * 10) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(np.sqrt(3) / 2)
    assert rank_correlation(np.ones(3), a[:3]) is None


def program(x, cxr, has_x, has_cxr):
    """A served program: risk = 0.2 + 0.3 has_x + 0.4 has_cxr * mean(cxr), two labels."""
    r = 0.2 + 0.3 * has_x + 0.4 * has_cxr * cxr.mean(dim=(1, 2))
    return torch.stack([r, r / 2], dim=1)


def test_the_served_model_adds_contributions_when_asked_and_refuses_a_bad_flag():
    served = ServedModel(program, ["x", "cxr", "has_x", "has_cxr"], {"x": (2,), "cxr": (2, 2), "has_x": (),
                                                                    "has_cxr": ()}, ["A", "B"])
    data = {"x": np.zeros((2, 2)), "cxr": np.ones((2, 2, 2)), "has_x": np.array([1.0, 1.0]),
            "has_cxr": np.array([1.0, 0.0])}
    plain = served.predict(data)
    assert list(plain.columns) == ["A", "B"]
    out = served.predict(data, params={"explain": True})
    assert list(out.columns) == ["A", "B", "contribution__x__A", "contribution__x__B", "contribution__cxr__A",
                                 "contribution__cxr__B"]
    np.testing.assert_allclose(out["contribution__cxr__A"], [0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["contribution__x__B"], [0.15, 0.15], atol=1e-6)
    pd.testing.assert_frame_equal(served.predict(data, params={"explain": False}), plain)
    with pytest.raises(ValueError, match="'explain' must be true or false, got 'yes'"):
        served.predict(data, params={"explain": "yes"})
