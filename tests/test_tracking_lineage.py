"""Tracking metadata computed without MLflow: data digests, run context tags, artifact location, model card text."""

from __future__ import annotations

import base64
import shutil

import numpy as np
import pytest

from clinfuse.pipeline.lineage import cohort_digest, dvc_lock_md5, split_digest
from clinfuse.pipeline.registry import DESCRIPTION_LIMIT, card_markdown, version_tags
from clinfuse.pipeline.tracking import artifact_location, run_context_tags
from tests.fixtures.cohorts import write_cohort


def test_cohort_digest_is_the_same_for_the_same_content_and_changes_with_one_array_value(tmp_path):
    a = write_cohort(tmp_path / "a" / "mimic-phenotype", "mimic", n=12)
    b = tmp_path / "b" / "mimic-phenotype"
    shutil.copytree(a, b)
    assert cohort_digest(a) == cohort_digest(b)
    arr = np.load(b / "ehr.npy")
    arr[3, 5, 7] += 1.0
    np.save(b / "ehr.npy", arr)
    assert cohort_digest(a) != cohort_digest(b)


def test_split_digest_tells_splits_of_one_cohort_apart():
    sha = "0" * 64
    train, val = split_digest(sha, np.array([0, 1, 2])), split_digest(sha, np.array([3, 4]))
    assert train != val and len(train) == 16
    assert split_digest(sha, np.array([0, 1, 2])) == train
    assert split_digest("1" * 64, np.array([0, 1, 2])) != train


def test_dvc_lock_md5_is_read_for_a_cohort_that_a_stage_wrote(tmp_path):
    (tmp_path / "data" / "processed" / "adni").mkdir(parents=True)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  etl_adni:\n    cmd: clinfuse etl adni\n    outs:\n"
        "    - path: data/processed/adni\n      hash: md5\n      md5: 0123abcd.dir\n      size: 10\n")
    assert dvc_lock_md5(tmp_path / "data" / "processed" / "adni", tmp_path) == "0123abcd.dir"
    assert dvc_lock_md5(tmp_path / "data" / "processed" / "other", tmp_path) is None
    assert dvc_lock_md5(tmp_path, tmp_path / "elsewhere") is None


def test_run_context_tags_name_the_commit_and_dvc_stage_and_experiment(monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train@mimic-phenotype-masam-42")
    monkeypatch.setenv("DVC_EXP_NAME", "nosy-ruck")
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    tags = run_context_tags()
    assert tags["dvc.stage"] == "train@mimic-phenotype-masam-42" and tags["dvc.experiment"] == "nosy-ruck"
    assert "dvc.baseline_rev" not in tags
    assert len(tags["mlflow.source.git.commit"]) == 40  # the tests run in a git checkout
    monkeypatch.delenv("DVC_STAGE")
    monkeypatch.delenv("DVC_EXP_NAME")
    assert not {"dvc.stage", "dvc.experiment"} & set(run_context_tags())


def test_artifacts_follow_a_sqlite_store_and_are_left_to_a_server(tmp_path):
    assert artifact_location(f"sqlite:///{tmp_path}/x/mlflow.db", "clinfuse/adni") == \
        (tmp_path / "x" / "mlartifacts" / "clinfuse" / "adni").as_uri()
    assert artifact_location("http://tracking.example:5000", "clinfuse/adni") is None


def card(labels: list[str], synthetic=True) -> dict:
    return {
        "dataset": "mimic", "task": "phenotype", "task_type": "multilabel", "synthetic": synthetic,
        "network_data_format": {
            "inputs": {"ehr": {"shape": [-1, 48, 24], "dtype": "float32", "description": "hourly EHR"},
                       "has_ehr": {"shape": [-1], "dtype": "float32", "meaning": "1 if present",
                                   "value_range": [0, 1]}},
            "outputs": {"probabilities": {"activation": "sigmoid", "channel_def": dict(enumerate(labels))}},
            "argument_order": ["ehr", "has_ehr"]},
        "intended_use": "Research use only.",
        "data_source": {"cohort": "mimic-phenotype", "synthetic": synthetic, "counts": {"train": 8, "test": 4}},
        "evaluation": {"split": "test", "n": 4, "headline": {"macro_auprc": 0.41234},
                       "test_metrics": {"macro_auprc": 0.41234, "macro_auroc": 0.7},
                       "macro_auprc_ci": [0.3, 0.5], "macro_auroc_ci": [0.6, 0.8],
                       "validation": {"metric": "val_macro_auprc", "value": 0.39876, "best_epoch": 3}},
        "training": {"method": "masam", "seed": 42},
    }


def test_model_card_markdown_states_task_inputs_labels_data_metrics_with_cis_and_use():
    text = card_markdown(card(["Sepsis", "Shock"]), "mimic-phenotype", "abc123")
    assert "> **Synthetic data.**" in text and "synthetic: **true**" in text
    assert "| `ehr` | [-1, 48, 24] | float32 | hourly EHR |" in text
    assert "| `has_ehr` | [-1] | float32 | 1 if present (range 0 to 1) |" in text
    assert "`Sepsis`, `Shock`" in text
    assert "| macro AUPRC | 0.412 | 0.300 to 0.500 |" in text and "| macro AUROC | 0.700 | 0.600 to 0.800 |" in text
    assert "Validation macro AUPRC: 0.399 (best epoch 3; selects the champion)" in text
    assert "### Intended use\nResearch use only." in text and "git commit `abc123`" in text
    assert 'mlflow.pyfunc.load_model("models:/mimic-phenotype@champion")' in text


def test_model_card_markdown_fits_mlflows_description_limit():
    long_labels = [f"label {k} " + "x" * 300 for k in range(25)]
    assert len(card_markdown(card(long_labels), "mimic-phenotype")) <= DESCRIPTION_LIMIT


def test_version_tags_carry_the_key_facts():
    assert version_tags(card(["a"], synthetic=False), "abc123") == {
        "cohort": "mimic-phenotype", "method": "masam", "seed": "42", "synthetic": "false",
        "headline_metric": "test_macro_auprc", "headline_value": "0.412340", "git_commit": "abc123"}
    assert "git_commit" not in version_tags(card(["a"]), None)


@pytest.mark.parametrize("history", [
    [{"epoch": 1, "train_loss_total": 0.9, "val_macro_auprc": 0.4, "lr": 1e-3},
     {"epoch": 2, "train_loss_total": 0.7, "val_macro_auprc": None, "lr": 1e-3}],
    [{"epoch": 1, "train_loss_total": 0.9, "val_macro_auprc": None}],
])
def test_training_curves_figure_is_a_png_even_with_undefined_epochs(history):
    from clinfuse.evaluation.training_curves import training_curves_png

    assert training_curves_png(history).startswith(b"\x89PNG")


def test_the_registered_input_example_holds_sample_values_only_for_a_synthetic_cohort(tmp_path):
    import json

    from clinfuse.pipeline.data import load_cohort, split_tensors
    from clinfuse.pipeline.stages.register import example_inputs

    path = write_cohort(tmp_path / "mimic-phenotype", "mimic", n=40)
    names, arrays = example_inputs(load_cohort(path), 4)
    assert names == ["ehr", "cxr", "has_ehr", "has_cxr"]
    assert arrays[0].shape == (4, 48, 24) and arrays[1].shape == (4, 1, 16, 16)
    assert not arrays[0].any() and not arrays[1].any()
    assert arrays[2].tolist() == [1, 1, 1, 1] and arrays[3].tolist() == [1, 0, 1, 0]
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "synthetic": True}))
    cohort = load_cohort(path)
    _, arrays = example_inputs(cohort, 2)
    val = split_tensors(cohort, "val").batch(np.arange(2))
    np.testing.assert_array_equal(arrays[0], val["inputs"]["ehr"].numpy())
    np.testing.assert_array_equal(arrays[3], val["present"]["cxr"].numpy().astype(np.float32))


def test_report_figures_are_taken_from_its_embedded_pngs_and_inline_svgs_in_page_order():
    from clinfuse.pipeline.stages.register import embedded_figures

    png = b"\x89PNG\r\n\x1a\nfake"
    page = (f'<p>x</p><img alt="Reliability &amp; risk" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            '<img alt="external" src="plot.png">'
            '<svg xmlns="http://www.w3.org/2000/svg" aria-label="PR curves: CN"><path d="M0 0"/></svg>')
    assert embedded_figures(page) == [
        ("Reliability & risk", "png", png),
        ("PR curves: CN", "svg",
         b'<svg xmlns="http://www.w3.org/2000/svg" aria-label="PR curves: CN"><path d="M0 0"/></svg>')]
