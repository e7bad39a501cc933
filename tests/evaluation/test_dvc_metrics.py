"""metrics.json is what `dvc exp show` / `dvc metrics diff` compare: numbers only, one name per quantity."""

from __future__ import annotations

from types import SimpleNamespace

from clinfuse.evaluation.report_data import report_metrics


def _data(metric: str, test: float, val: float, paired: dict | None = None) -> SimpleNamespace:
    """The fields of ReportData that report_metrics reads: one champion run of masam, seed 42."""
    return SimpleNamespace(
        headline_metric=metric, champion={"method": "masam", "seed": 42, "value": test},
        runs=[{"method": "masam", "seed": 42, "val_metric": f"val_{metric}", "val": val, "test": test,
               "champion": True}],
        comparison=[{"method": "masam", "headline_mean": 0.5, "headline_std": None, "auroc_mean": 0.7,
                     "rank_auprc": 1.0, "n_seeds": 1}],
        paired_difference=paired)


def test_adni_and_mimic_metrics_have_the_same_keys_and_the_metric_is_named_beside_them():
    mimic, mimic_about = report_metrics(_data("macro_auprc", 0.31, 0.4), "mimic-phenotype")
    adni, adni_about = report_metrics(_data("macro_map", 0.61, 0.7), "adni")
    assert mimic == {"champion": {"test_headline": 0.31, "val_headline": 0.4, "seed": 42},
                     "methods": {"masam": {"test_headline_mean": 0.5, "test_headline_std": None,
                                           "test_macro_auroc_mean": 0.7, "avg_rank_auprc": 1.0, "n_seeds": 1}}}
    assert adni["champion"] == {"test_headline": 0.61, "val_headline": 0.7, "seed": 42}
    assert adni["methods"] == mimic["methods"]
    assert (mimic_about["headline"], adni_about["headline"]) == ("macro_auprc", "macro_map")
    assert adni_about == {"cohort": "adni", "headline": "macro_map", "champion_method": "masam",
                          "validation_metric": "val_macro_map"}


def test_paired_difference_keeps_its_numbers_in_metrics_and_its_method_names_beside_them():
    paired = {"a": "masam", "b": "late_fusion", "seed": 42,
              "macro_auprc": {"difference": 0.02, "ci": [-0.01, 0.05], "n_valid_resamples": 50, "p_le_zero": 0.2},
              "macro_auroc": {"difference": -0.01, "ci": [-0.03, 0.01], "n_valid_resamples": 50, "p_le_zero": 0.8}}
    metrics, about = report_metrics(_data("macro_map", 0.6, 0.7, paired), "adni")
    assert metrics["paired_difference"] == {
        "macro_auprc": {"difference": 0.02, "ci_low": -0.01, "ci_high": 0.05, "p_le_zero": 0.2},
        "macro_auroc": {"difference": -0.01, "ci_low": -0.03, "ci_high": 0.01, "p_le_zero": 0.8}}
    assert (about["paired_difference"]["a"], about["paired_difference"]["b"]) == ("masam", "late_fusion")
