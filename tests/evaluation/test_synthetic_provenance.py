"""Synthetic results never pass for clinical ones: report banner, model card, tags, champion rule."""

from __future__ import annotations

import json
import shutil

import pytest

from clinfuse.pipeline.cli import main
from clinfuse.pipeline.registry import takes_champion


def cohort_copy(cohort, dest, synthetic):
    """The fixture cohort with its manifest's provenance set (True, False, or absent for None)."""
    shutil.copytree(cohort, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest.pop("synthetic", None)
    if synthetic is not None:
        manifest["synthetic"] = synthetic
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def evaluations_with_validation(root, dest, value):
    """The fixture's evaluated runs, every run's validation metric replaced by `value`."""
    shutil.copytree(root / "eval", dest)
    for path in dest.glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        metrics["validation"]["value"] = value
        path.write_text(json.dumps(metrics))
    return dest


def test_report_of_a_synthetic_cohort_carries_a_banner_and_says_so_in_its_title(pipeline_run, tmp_path):
    root, base, cohort = pipeline_run
    pages = {}
    for synthetic in (True, False):
        c = cohort_copy(cohort, tmp_path / f"cohort-{synthetic}", synthetic)
        out = tmp_path / f"report-{synthetic}"
        assert main(base + ["report", "--cohort", str(c), "--runs", str(root / "eval"), "--out", str(out)]) == 0
        pages[synthetic] = (out / "report.html").read_text()
    assert 'id="synthetic-banner"' in pages[True] and "<title>SYNTHETIC DATA: MIMIC-IV" in pages[True]
    assert "synthetic-banner" not in pages[False] and "<title>MIMIC-IV" in pages[False]


@pytest.mark.parametrize("new,previous,expected", [
    (("true", 0.9), None, True),  # first version of a name
    (("true", 0.99), ("false", 0.5), False),  # synthetic never takes it from real data, whatever its metric
    (("unknown", 0.99), ("false", 0.5), False),  # nor does a version of unknown provenance
    (("false", 0.1), ("true", 0.9), True),  # real data replaces a synthetic champion (metrics not comparable)
    (("false", 0.1), ("unknown", 0.9), True),
    (("false", 0.6), ("false", 0.5), True),  # real against real: the better validation metric
    (("false", 0.5), ("false", 0.5), False),
    (("true", 0.6), ("true", 0.5), True),  # synthetic against synthetic: likewise
    (("true", 0.6), ("unknown", 0.7), False),
])
def test_champion_rule_keeps_real_data_champions(new, previous, expected):
    (synthetic, metric), (prev_synthetic, prev_metric) = new, previous or (None, None)
    assert takes_champion(metric, synthetic, prev_metric, prev_synthetic) is expected


def test_synthetic_version_never_takes_champion_from_a_real_data_version(pipeline_run, tmp_path):
    import mlflow

    root, base, cohort = pipeline_run
    name = "provenance-check"

    def register(synthetic, val, tag):
        c = cohort_copy(cohort, tmp_path / f"cohort-{tag}", synthetic)
        evals = evaluations_with_validation(root, tmp_path / f"eval-{tag}", val)
        out = tmp_path / f"{tag}.json"
        assert main(base + ["register", "--cohort", str(c), "--runs", str(root / "runs"), "--evaluations",
                            str(evals), "--out", str(out), "--name", name]) == 0
        return json.loads(out.read_text())[0]

    real = register(False, 0.5, "real")
    synthetic = register(True, 0.99, "synthetic")  # a far better validation metric, on synthetic data
    assert real["champion"] is True and synthetic["champion"] is False
    client = mlflow.MlflowClient(real["tracking_uri"])
    assert int(client.get_model_version_by_alias(name, "champion").version) == real["version"]
    version = client.get_model_version(name, str(synthetic["version"]))
    assert version.tags["synthetic"] == "true" and version.description.startswith("SYNTHETIC DATA")
    assert client.get_model_version(name, str(real["version"])).tags["synthetic"] == "false"

    from clinfuse.pipeline.registry import download_registered_model

    mlflow.set_tracking_uri(real["tracking_uri"])
    _, card = download_registered_model(f"models:/{name}/{synthetic['version']}")
    assert card["synthetic"] is True and card["intended_use"].startswith("SYNTHETIC DATA")
    assert card["data_source"]["synthetic"] is True
    _, real_card = download_registered_model(f"models:/{name}/{real['version']}")
    assert real_card["synthetic"] is False and not real_card["intended_use"].startswith("SYNTHETIC")
