"""The Why section says whether the measured numbers agree with the paper's claims, on small hand-made inputs."""

from __future__ import annotations

import pytest

from clinfuse.evaluation.analysis_plots import flatness_figure
from clinfuse.evaluation.claims import (
    alignment_claim,
    eigenvalue_status,
    flatness_claim,
    mean_late_alignment,
    probe_claim,
    why_claims,
)
from clinfuse.evaluation.dominance import dominance_series
from clinfuse.evaluation.why import CAPTIONS, claim_sentence, why_section


def row(method, encoder, trace, se, eigen=1.0, status="ok"):
    return {"method": method, "encoder": encoder, "trace_per_param": trace, "se_per_param": se, "eigenvalue": eigen,
            "eigenvalue_status": status}


def test_a_negative_or_unconverged_top_eigenvalue_is_marked_not_ranked_as_flat():
    assert eigenvalue_status(-1.734, True) == "negative"
    assert eigenvalue_status(3.2, False) == "not converged"
    assert eigenvalue_status(None, None) == "not converged"
    assert eigenvalue_status(0.0, True) == "ok" and eigenvalue_status(2.5, True) == "ok"


def test_masam_flatter_beyond_two_standard_errors_on_every_encoder_agrees():
    rows = [row("masam", "ehr", 1.0, 0.1), row("late_fusion", "ehr", 1.5, 0.1),  # 0.5 > 2 * 0.141
            row("masam", "cxr", 2.0, 0.1), row("late_fusion", "cxr", 2.5, 0.1)]
    assert flatness_claim(rows, "masam")["verdict"] == "agrees"


def test_masam_sharper_somewhere_and_flatter_nowhere_disagrees():
    rows = [row("masam", "ehr", 1.6, 0.1), row("late_fusion", "ehr", 1.0, 0.1),  # sharper by 0.6 > 0.28
            row("masam", "cxr", 2.0, 0.1), row("late_fusion", "cxr", 2.1, 0.1)]  # 0.1 < 0.28: no difference
    assert flatness_claim(rows, "masam")["verdict"] == "disagrees"


def test_differences_within_two_standard_errors_cannot_be_told_apart():
    rows = [row("masam", "ehr", 1.0, 0.2), row("sam", "ehr", 1.5, 0.2)]  # 0.5 < 2 * 0.283 = 0.566
    claim = flatness_claim(rows, "masam")
    assert claim["verdict"] == "not distinguishable"
    assert "not distinguishable from sam" in claim["details"][0]


def test_flatter_than_one_method_and_sharper_than_another_is_mixed():
    rows = [row("masam", "ehr", 1.0, 0.01), row("sam", "ehr", 2.0, 0.01), row("late_fusion", "ehr", 0.5, 0.01)]
    assert flatness_claim(rows, "masam")["verdict"] == "mixed"


def test_a_negative_eigenvalue_is_left_out_of_the_comparison_and_said_so():
    rows = [row("masam", "ehr", 1.0, 0.1, eigen=-1.734, status="negative"), row("sam", "ehr", 1.5, 0.1, eigen=4.0)]
    details = flatness_claim(rows, "masam")["details"]
    assert any("not compared" in d and "masam negative" in d for d in details)
    assert not any("top eigenvalue: lower" in d for d in details)


def test_probe_claim_uses_a_margin_for_single_fits():
    probes = {"masam": {"ehr": 0.60, "cxr": 0.40}, "late_fusion": {"ehr": 0.55, "cxr": 0.398}}
    assert probe_claim(probes, "masam")["verdict"] == "mixed"  # ehr better; cxr within 0.005
    assert probe_claim(probes, "masam", margin=0.001)["verdict"] == "agrees"
    probes["late_fusion"]["ehr"] = 0.70
    assert probe_claim(probes, "masam")["verdict"] == "disagrees"


def test_alignment_claim_compares_the_second_half_of_training():
    series = {"masam": [{"step": 1, "ehr": -0.9}, {"step": 2, "ehr": -0.9}, {"step": 3, "ehr": 0.5},
                        {"step": 4, "ehr": 0.7}],
              "late_fusion": [{"step": s, "ehr": 0.2} for s in (1, 2, 3, 4)]}
    assert mean_late_alignment(series["masam"]) == {"ehr": pytest.approx(0.6)}
    assert alignment_claim(series, "masam")["verdict"] == "agrees"


def test_without_the_proposed_method_no_claim_is_testable():
    analysis = {"runs": {"lf": {"method": "late_fusion", "seed": 1, "flatness": [], "probes": {}}}}
    assert {c["verdict"] for c in why_claims(analysis, 1, "masam").values()} == {"not testable"}


def _analysis(masam_trace, sam_trace):
    run = {"landscape": {}, "alignment": None}
    return {"cohort": "mimic-phenotype", "settings": {"sensitivity_method": "masam", "proposed": ["masam"],
                                                      "hutchinson_vectors": 8},
            "skipped": [], "efficiency": None,
            "runs": {"masam-s1": {**run, "method": "masam", "seed": 1, "probes": {},
                                  "flatness": [{"encoder": "ehr", "trace_per_param": masam_trace, "se_per_param": 0.01,
                                                "eigenvalue": -2.0, "power_converged": True, "n_params": 10}]},
                     "sam-s1": {**run, "method": "sam", "seed": 1, "probes": {},
                                "flatness": [{"encoder": "ehr", "trace_per_param": sam_trace, "se_per_param": 0.01,
                                              "eigenvalue": 3.0, "power_converged": True, "n_params": 10}]}}}


@pytest.mark.parametrize(("masam", "sam", "word"), [(1.0, 2.0, "agree with it"), (2.0, 1.0, "contradict it")])
def test_the_flatness_caption_says_whether_the_numbers_agree_per_cohort(masam, sam, word):
    w = why_section(_analysis(masam, sam), {}, seed=1)
    caption = w["captions"]["flatness"]
    assert "On mimic-phenotype (seed 1" in caption and word in caption
    assert "leaves each encoder flatter" in caption
    # an analysis written before statuses existed still gets its negative eigenvalue marked
    assert next(r for r in w["flatness"] if r["method"] == "masam")["eigenvalue_status"] == "negative"


def test_the_flatness_figure_draws_no_bar_for_a_negative_eigenvalue():
    import matplotlib.pyplot as plt

    from clinfuse.evaluation import analysis_plots

    captured = {}
    original = analysis_plots._png
    analysis_plots._png = lambda fig: captured.setdefault("fig", fig) and b""
    try:
        flatness_figure([row("masam", "ehr", 1.0, 0.1, eigen=-1.734, status="negative"),
                         row("sam", "ehr", 1.5, 0.1, eigen=4.0)])
    finally:
        analysis_plots._png = original
    ax = captured["fig"].axes[1]
    heights = [p.get_height() for p in ax.patches]
    assert -1.734 not in heights and 4.0 in heights
    assert any("negative" in t.get_text() for t in ax.texts)
    plt.close(captured["fig"])


def test_masams_dominant_modality_share_per_epoch_comes_from_the_mean_dominant_index():
    history = [{"epoch": 1, "train_dominant": 0.25, "train_aps_ehr": 0.9, "train_aps_cxr": 0.3},
               {"epoch": 2, "train_dominant": 1.0, "train_aps_ehr": 0.2, "train_aps_cxr": 0.8}]
    series = dominance_series(history, ["ehr", "cxr"])
    assert series[0]["share"] == {"ehr": 0.75, "cxr": 0.25} and series[1]["share"] == {"ehr": 0.0, "cxr": 1.0}
    assert series[1]["aps"] == {"ehr": 0.2, "cxr": 0.8}
    assert dominance_series([{"epoch": 1, "train_loss_total": 0.5}], ["ehr", "cxr"]) is None  # not MASAM


def test_a_claim_sentence_names_the_cohort_the_seed_the_verdict_and_the_details():
    claim = {"claim": "SAM flattens", "verdict": "agrees", "details": ["ehr: lower", "cxr: lower"]}
    assert claim_sentence(claim, "adni", 3) == (" The paper's claim: SAM flattens. On adni (seed 3, one run per method) "
                                                "the measured numbers agree with it: ehr: lower; cxr: lower.")


def test_a_claim_sentence_without_a_cohort_details_or_a_known_verdict():
    claim = {"claim": "C", "verdict": "not testable", "details": []}
    assert claim_sentence(claim, None, None) == (" The paper's claim: C. Here (seed None, one run per method) the "
                                                 "measured numbers cannot test it.")


def test_a_claim_sentence_shows_six_details_then_an_ellipsis():
    def ending(n):
        claim = {"claim": "C", "verdict": "mixed", "details": [str(i) for i in range(n)]}
        return claim_sentence(claim, "x", 1).split("partly agree with it: ")[1]

    assert ending(6) == "0; 1; 2; 3; 4; 5."
    assert ending(7) == "0; 1; 2; 3; 4; 5 …."


def test_each_claim_s_sentence_is_appended_to_its_figure_s_caption_and_the_rest_are_unchanged():
    a = _analysis(1.0, 2.0)
    a["settings"]["proposed"] = ["masam", "sam"]  # the first proposed method is the one whose claims are tested
    a["efficiency"] = {"methods": [{"method": "masam", "step_ms": 3.0}], "device": "cpu", "batch": 8}
    w = why_section(a, {}, seed=1)
    claims = why_claims(a, 1, "masam")
    assert w["claims"] == claims and claims["flatness"] != why_claims(a, 1, "sam")["flatness"]
    for name in ("flatness", "probes", "alignment"):
        assert w["captions"][name] == CAPTIONS[name] + claim_sentence(claims[name], "mimic-phenotype", 1)
    assert w["captions"]["landscape_1d"] == CAPTIONS["landscape_1d"]
    assert w["efficiency"] == [{"method": "masam", "step_ms": 3.0}] and w["efficiency_device"] == "cpu, batch 8"
    assert w["settings"] == a["settings"] and w["skipped"] == []


def test_an_analysis_without_runs_or_a_proposed_method_gets_an_untestable_section():
    a = {"runs": {}, "settings": {"sensitivity_method": "sam"}, "skipped": ["flatness"], "efficiency": None}
    w = why_section(a, {}, seed=1)
    assert w["flatness"] == [] and w["skipped"] == ["flatness"]
    assert {c["details"][0] for c in w["claims"].values()} == {"no proposed method set"}
    assert "Here (seed None," in w["captions"]["probes"]
    assert w["efficiency"] is None


def test_a_recorded_eigenvalue_status_is_kept_rather_than_recomputed():
    a = _analysis(1.0, 2.0)
    a["runs"]["sam-s1"]["flatness"] = [{"encoder": "ehr", "trace_per_param": 2.0, "se_per_param": 0.01,
                                        "eigenvalue_status": "negative"}]  # no eigenvalue fields to recompute from
    rows = why_section(a, {}, seed=1)["flatness"]
    assert next(r for r in rows if r["method"] == "sam")["eigenvalue_status"] == "negative"
