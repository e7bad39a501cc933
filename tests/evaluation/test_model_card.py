"""The registered version's model card says what a clinician asks before trusting a threshold."""

from __future__ import annotations

import json

from clinfuse.pipeline.stages.register import validation_margin


def test_the_card_gives_test_positives_calibration_threshold_and_validation_margin(pipeline_run):
    import mlflow

    root, _, _ = pipeline_run
    record = json.loads((root / "registry.json").read_text())[0]
    mlflow.set_tracking_uri(record["tracking_uri"])
    mlflow.set_registry_uri(record["tracking_uri"])
    version = mlflow.MlflowClient().get_model_version_by_alias(record["name"], "champion")
    text = version.description
    champion = json.loads((root / "eval" / f"{record['method']}-s{record['seed']}" / "metrics.json").read_text())
    sepsis = champion["test"]["per_label"]["Sepsis"]
    assert f"Sepsis {sepsis['n_pos']}/{sepsis['n']} ({100 * sepsis['prevalence']:.1f}%)" in text
    assert f"Brier score {champion['calibration']['pooled']['brier']:.3f}" in text
    assert "Chosen on the validation split (maximises Youden's J" in text
    chf = champion["operating_points"]["per_label"]["CHF"]["threshold"]
    assert f"CHF {chf:.3f}" in text
    other = "masam" if record["method"] == "late_fusion" else "late_fusion"
    other_val = json.loads((root / "eval" / f"{other}-s1" / "metrics.json").read_text())["validation"]["value"]
    margin = champion["validation"]["value"] - other_val
    assert f"for the best other method ({other}, seed 1): margin {margin:+.3f}" in text


def _run(method: str, seed: int, value: float | None) -> dict:
    return {"method": method, "seed": seed, "validation": {"metric": "val_macro_auprc", "value": value}}


def test_the_validation_margin_is_over_the_best_run_of_another_method():
    champion = _run("masam", 1, 0.50)
    results = [champion, _run("masam", 2, 0.49), _run("sam", 1, 0.45), _run("sam", 2, 0.47), _run("late_fusion", 1, None)]
    margin = validation_margin(champion, results)
    assert margin["runner_up"] == {"method": "sam", "seed": 2, "value": 0.47}
    assert abs(margin["margin"] - 0.03) < 1e-12


def test_a_champion_with_no_other_scored_method_has_no_margin():
    champion = _run("masam", 1, 0.5)
    assert validation_margin(champion, [champion, _run("sam", 1, None)])["margin"] is None
