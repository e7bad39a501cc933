"""Run and evaluation folders read back checked: a damaged file is one line naming it, a rare outcome
(no positives in the test split) is reported as undefined, and a changed cohort is never evaluated."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from clinfuse.pipeline.cli import main
from tests.fixtures.cohorts import write_cohort


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err[-3000:]
    return err


def _copy_run(finished_run, tmp_path):
    run, evaluation = finished_run
    shutil.copytree(run, tmp_path / "runs" / run.name)
    shutil.copytree(evaluation, tmp_path / "eval")
    return tmp_path / "runs" / run.name, tmp_path / "eval"


def test_evaluate_finishes_every_run_when_the_test_headline_is_undefined(no_positive_test_cohort, fast_params,
                                                                        tmp_path, capsys):
    base = ["--params", str(fast_params)]
    for seed in (1, 2):
        assert main(base + ["train", "--cohort", str(no_positive_test_cohort), "--method", "late_fusion", "--seed",
                            str(seed), "--out", str(tmp_path / "runs" / f"late_fusion-s{seed}"), "--no-tracking"]) == 0
    assert main(base + ["evaluate", "--runs-dir", str(tmp_path / "runs"), "--all", "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert out.count("test macro_auprc undefined (no positives in the test split)") == 2
    for seed in (1, 2):
        metrics = json.loads((tmp_path / "eval" / f"late_fusion-s{seed}" / "metrics.json").read_text())
        assert metrics["test"]["macro_auprc"] is None
        assert metrics["headline_undefined"] == "no positives in the test split"
    assert main(base + ["report", "--cohort", str(no_positive_test_cohort), "--runs", str(tmp_path / "eval"),
                        "--out", str(tmp_path / "report")]) == 0
    assert "test macro_auprc undefined (no positives in the test split)" in capsys.readouterr().out
    assert "undefined: no positives in the test split" in (tmp_path / "report" / "report.html").read_text()


def test_a_run_is_not_evaluated_on_a_rebuilt_cohort_with_other_samples(fast_params, tmp_path, capsys):
    cohort = write_cohort(tmp_path / "mimic-phenotype", "mimic")
    run = tmp_path / "runs" / "late_fusion-s1"
    assert main(["--params", str(fast_params), "train", "--cohort", str(cohort), "--method", "late_fusion",
                 "--seed", "1", "--out", str(run), "--no-tracking"]) == 0
    assert len(json.loads((run / "train_summary.json").read_text())["cohort_digest"]) == 64
    write_cohort(cohort, "mimic", n=35)  # rebuilt in place: 5 samples fewer
    capsys.readouterr()
    code = main(["--params", str(fast_params), "evaluate", "--run", str(run), "--out", str(tmp_path / "eval")])
    err = _one_line_error(capsys)
    assert code == 2 and f"{cohort}: its content changed since {run} was trained" in err
    assert not (tmp_path / "eval").exists()


def test_a_cohort_rebuilt_with_the_same_content_is_still_evaluated(fast_params, tmp_path):
    cohort = write_cohort(tmp_path / "mimic-phenotype", "mimic")
    run = tmp_path / "runs" / "late_fusion-s1"
    assert main(["--params", str(fast_params), "train", "--cohort", str(cohort), "--method", "late_fusion",
                 "--seed", "1", "--out", str(run), "--no-tracking"]) == 0
    manifest = json.loads((cohort / "manifest.json").read_text())
    manifest["created"] = "2030-01-01T00:00:00+00:00"  # rebuilt later from the same exports
    (cohort / "manifest.json").write_text(json.dumps(manifest))
    np.save(cohort / "ehr.npy", np.load(cohort / "ehr.npy"))
    assert main(["--params", str(fast_params), "evaluate", "--run", str(run), "--out", str(tmp_path / "eval")]) == 0


@pytest.mark.parametrize(("text", "problem"), [
    ("", "train_summary.json: empty"),
    ('{"metric": "val_macro', "train_summary.json: not valid JSON"),
    ("[]", "train_summary.json: expected the train_summary.json a finished clinfuse train run writes (a mapping"),
    ("{}", "train_summary.json: missing key 'metric'"),
    ('{"metric": "val_macro_auprc", "best_val_metric": "high", "best_epoch": 1}', "best_val_metric: unexpected value"),
])
def test_a_damaged_train_summary_is_one_line_naming_it(finished_run, fast_params, tmp_path, capsys, text, problem):
    run, _ = _copy_run(finished_run, tmp_path)
    (run / "train_summary.json").write_text(text)
    code = main(["--params", str(fast_params), "evaluate", "--run", str(run), "--out", str(tmp_path / "out")])
    err = _one_line_error(capsys)
    assert code == 2 and problem in err and str(run) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("text", "problem"), [
    ("train: [unclosed\n", "config.yaml: not valid YAML"),
    ("", "config.yaml: expected the config.yaml clinfuse train writes (a mapping of keys), got NoneType"),
    ("{}\n", "config.yaml: missing key 'cohort'"),
    ("cohort: x\ncohort: y\n", "config.yaml: line 2: duplicate key 'cohort'"),
])
def test_an_invalid_config_yaml_is_one_line_naming_it(finished_run, fast_params, tmp_path, capsys, text, problem):
    run, _ = _copy_run(finished_run, tmp_path)
    (run / "config.yaml").write_text(text)
    code = main(["--params", str(fast_params), "evaluate", "--run", str(run), "--out", str(tmp_path / "out")])
    err = _one_line_error(capsys)
    assert code == 2 and problem in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("text", "problem"), [
    ("{}", "metrics.json: missing key 'run'"),
    ("", "metrics.json: empty"),
    ('{"run": "late', "metrics.json: not valid JSON"),
])
def test_a_damaged_metrics_json_is_one_line_naming_it(finished_run, mimic_cohort, fast_params, tmp_path, capsys,
                                                      text, problem):
    _, evaluation = _copy_run(finished_run, tmp_path)
    (evaluation / "metrics.json").write_text(text)
    code = main(["--params", str(fast_params), "report", "--cohort", str(mimic_cohort), "--runs", str(evaluation),
                 "--out", str(tmp_path / "report")])
    err = _one_line_error(capsys)
    assert code == 2 and problem in err and str(evaluation) in err
    assert not (tmp_path / "report").exists()


def test_a_metrics_json_without_its_headline_is_one_line(finished_run, mimic_cohort, fast_params, tmp_path, capsys):
    _, evaluation = _copy_run(finished_run, tmp_path)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    del metrics["test"]["headline"]
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    code = main(["--params", str(fast_params), "report", "--cohort", str(mimic_cohort), "--runs", str(evaluation),
                 "--out", str(tmp_path / "report")])
    assert code == 2 and "metrics.json: test.headline: missing" in _one_line_error(capsys)


def test_a_truncated_predictions_file_is_one_line_naming_it(finished_run, mimic_cohort, fast_params, tmp_path, capsys):
    _, evaluation = _copy_run(finished_run, tmp_path)
    path = evaluation / "predictions_test.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code = main(["--params", str(fast_params), "report", "--cohort", str(mimic_cohort), "--runs", str(evaluation),
                 "--out", str(tmp_path / "report")])
    err = _one_line_error(capsys)
    assert code == 2 and f"{path}: not a readable Parquet file" in err
    assert not (tmp_path / "report").exists()
