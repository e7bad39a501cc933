"""One unimodal config per role trains the same role on every cohort of a sweep (EHR-only / film-only, tabular / MRI)."""

from __future__ import annotations

import pytest
import yaml

from clinfuse.models.methods.unimodal import Unimodal
from clinfuse.pipeline.trainer import fit
from tests.training.test_trainer import spec


@pytest.mark.parametrize(("cohort", "method", "modality"), [
    ("mimic_cohort", "unimodal_primary", "ehr"), ("mimic_cohort", "unimodal_image", "cxr"),
    ("adni_cohort", "unimodal_image", "mri")])
def test_a_role_is_resolved_to_the_cohorts_modality_and_recorded(cohort, method, modality, request, tmp_path):
    fit(spec(request.getfixturevalue(cohort), method, tmp_path / "run", epochs=1), track=False)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["method"]["options"]["modality"] == modality
    assert config["prediction_head"] == f"unimodal:{modality}"


def test_a_role_on_a_one_modality_cohort_or_an_unknown_modality_is_refused():
    with pytest.raises(ValueError, match="two modalities"):
        Unimodal.cohort_options({"modality": "image"}, ["ehr"])
    assert Unimodal.cohort_options({"modality": "ehr"}, ["ehr", "cxr"]) == {"modality": "ehr"}
    assert Unimodal.cohort_options({"modality": "primary"}, ["tabular", "mri"]) == {"modality": "tabular"}
