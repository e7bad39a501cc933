"""Unimodal runs in the sweep are the probes' references, not methods the Why section compares."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinfuse.pipeline.settings.analyze import AnalyzeSettings
from clinfuse.pipeline.stages.analyze import analyze_cohort
from clinfuse.pipeline.trainer import fit
from tests.fixtures.cohorts import write_cohort
from tests.training.test_trainer import spec

SETTINGS = AnalyzeSettings(hutchinson_vectors=2, hutchinson_max_vectors=2, power_iters=2, batch_size=8,
                           landscape_points_1d=3, landscape_points_2d=3, landscape_samples=8, probe_max_train=40,
                           efficiency=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refs")
    cohort = write_cohort(root / "mimic-phenotype", "mimic", n=40)
    for method in ("late_fusion", "unimodal_image"):
        fit(spec(cohort, method, root / "runs" / f"{method}-s1", epochs=1, seed=1), track=False)
    return root


def test_unimodal_runs_are_probe_baselines_and_not_compared(runs):
    import json

    out = runs / "analysis"
    analyze_cohort(runs / "runs", None, out, ["late_fusion", "unimodal_image"], [1], SETTINGS, log_mlflow=False)
    a = json.loads((out / "analysis.json").read_text())
    assert set(a["runs"]) == {"late_fusion-s1"}
    assert a["probe_baselines"]["cxr"]["run"] == "unimodal_image-s1"
    assert any(s["analysis"] == "probe baseline ehr" for s in a["skipped"])  # no EHR-only run here


def test_a_sweep_of_unimodal_runs_only_is_refused(runs):
    from clinfuse.etl.errors import InputError

    with pytest.raises(InputError, match="only unimodal runs"):
        analyze_cohort(runs / "runs", None, runs / "analysis2", ["unimodal_image"], [1], SETTINGS, log_mlflow=False)


def test_analyze_seeds_first_analyses_the_first_seed_only(runs):
    import json

    out = runs / "analysis3"
    first = SETTINGS.model_copy(update={"seeds": "first"})
    # seed 2 has no runs: with "first" it is never looked for
    analyze_cohort(runs / "runs", None, out, ["late_fusion"], [1, 2], first, log_mlflow=False)
    assert {r["seed"] for r in json.loads((out / "analysis.json").read_text())["runs"].values()} == {1}
