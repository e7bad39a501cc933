"""The cohort manifest is one typed model: the loader refuses a manifest it cannot trust, in one line."""

from __future__ import annotations

import json

import pytest

from clinfuse.etl.errors import InputError
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.manifest import SCHEMA_VERSION
from tests.fixtures.cohorts import write_cohort


def _edit_manifest(cohort, change):
    path = cohort / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    return path


def _error(cohort) -> str:
    with pytest.raises(InputError) as err:
        load_cohort(cohort)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_cohort_of_an_older_schema_version_is_refused_naming_both_versions_and_the_fix(tmp_path):
    cohort = write_cohort(tmp_path / "c", "mimic")
    path = _edit_manifest(cohort, lambda m: m.update(schema_version=SCHEMA_VERSION - 1))
    message = _error(cohort)
    assert message.startswith(f"{path}: ")
    assert f"schema_version is {SCHEMA_VERSION - 1}" in message and f"version {SCHEMA_VERSION}" in message
    assert "re-run the ETL stage" in message


def test_a_manifest_without_a_schema_version_is_refused_as_version_none(tmp_path):
    cohort = write_cohort(tmp_path / "c", "adni")
    _edit_manifest(cohort, lambda m: m.pop("schema_version"))
    assert "schema_version is None" in _error(cohort)


def test_an_unknown_key_is_named_with_the_file(tmp_path):
    cohort = write_cohort(tmp_path / "c", "mimic")
    path = _edit_manifest(cohort, lambda m: m.update(labels=["x"]))
    assert _error(cohort) == f"{path}: labels: unknown key"


def test_a_missing_field_is_named(tmp_path):
    cohort = write_cohort(tmp_path / "c", "mimic")
    path = _edit_manifest(cohort, lambda m: m.pop("id_columns"))
    assert _error(cohort) == f"{path}: id_columns: Field required"


def test_a_mistyped_nested_field_is_named_by_its_path(tmp_path):
    cohort = write_cohort(tmp_path / "c", "mimic")
    path = _edit_manifest(cohort, lambda m: m["exclusions"][0].update(excluded="many"))
    assert _error(cohort).startswith(f"{path}: exclusions.0.excluded: Input should be a valid integer")


def test_the_etl_settings_are_checked_against_the_datasets_own_settings_model(tmp_path):
    cohort = write_cohort(tmp_path / "c", "adni")
    _edit_manifest(cohort, lambda m: m["config"].update(cxr_size=64))  # a MIMIC setting in an ADNI cohort
    message = _error(cohort)
    assert "config" in message and "cxr_size" in message


def test_the_settings_of_the_other_dataset_are_refused():
    from clinfuse.pipeline.manifest import CohortManifest
    from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
    from tests.fixtures.cohorts import fixture_manifest

    with pytest.raises(ValueError, match="not the adni ETL settings"):
        CohortManifest.model_validate({**fixture_manifest("adni").to_json(), "config": MimicEtlSettings()})


def test_every_modality_needs_an_input_description(tmp_path):
    cohort = write_cohort(tmp_path / "c", "adni")
    _edit_manifest(cohort, lambda m: m["input_descriptions"].pop("mri"))
    assert "input_descriptions lacks modality 'mri'" in _error(cohort)


def test_a_multiclass_cohort_without_class_names_is_refused(tmp_path):
    cohort = write_cohort(tmp_path / "c", "adni")
    _edit_manifest(cohort, lambda m: m.pop("class_names"))
    assert "needs class_names" in _error(cohort)


def test_a_manifest_that_is_not_json_is_refused(tmp_path):
    cohort = write_cohort(tmp_path / "c", "mimic")
    (cohort / "manifest.json").write_text("{not json")
    assert "not valid JSON" in _error(cohort)


def test_the_loaded_manifest_is_typed_and_names_what_later_stages_need(tmp_path):
    cohort = load_cohort(write_cohort(tmp_path / "c", "adni"))
    assert cohort.manifest.id_columns == ["RID", "PTID", "IMAGEUID"]
    assert set(cohort.manifest.input_descriptions) == {"tabular", "mri"}
    assert cohort.manifest.config.require_mri is True and not cohort.manifest.partially_paired
