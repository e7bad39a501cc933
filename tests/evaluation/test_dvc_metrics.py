"""metrics.json is what `dvc exp show` / `dvc metrics diff` compare: the headline only, numbers only, keys
unique across cohorts (so DVC does not prefix them with the file's path); the rest in metrics_detail.json."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from clinfuse.evaluation.report_data import report_metrics

ROOT = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).with_name("dvc")


def _data(metric: str, test: float, val: float, paired: dict | None = None) -> SimpleNamespace:
    """The fields of ReportData that report_metrics reads: masam (the champion, seed 42) and late_fusion."""
    return SimpleNamespace(
        headline_metric=metric, champion={"method": "masam", "seed": 42, "value": test},
        runs=[{"method": "masam", "seed": 42, "val_metric": f"val_{metric}", "val": val, "test": test,
               "champion": True},
              {"method": "late_fusion", "seed": 42, "val_metric": f"val_{metric}", "val": val - 0.1, "test": 0.2,
               "champion": False}],
        comparison=[{"method": "masam", "headline_mean": 0.5, "headline_std": None, "auroc_mean": 0.7,
                     "rank_auprc": 1.0, "n_seeds": 1},
                    {"method": "late_fusion", "headline_mean": 0.2, "headline_std": None, "auroc_mean": 0.6,
                     "rank_auprc": 2.0, "n_seeds": 1}],
        paired_difference=paired)


def test_metrics_hold_the_champion_and_each_methods_headline_under_the_cohorts_name():
    mimic, mimic_detail, mimic_about = report_metrics(_data("macro_auprc", 0.31, 0.4), "mimic-phenotype")
    adni, adni_detail, adni_about = report_metrics(_data("macro_map", 0.61, 0.7), "adni")
    assert mimic == {"champion": {"mimic-phenotype": 0.31}, "mimic-phenotype": {"masam": 0.5, "late_fusion": 0.2}}
    assert adni == {"champion": {"adni": 0.61}, "adni": {"masam": 0.5, "late_fusion": 0.2}}
    assert mimic_detail == {"champion": {"test_headline": 0.31, "val_headline": 0.4, "seed": 42},
                            "methods": {"masam": {"test_headline_mean": 0.5, "test_headline_std": None,
                                                  "test_macro_auroc_mean": 0.7, "avg_rank_auprc": 1.0, "n_seeds": 1},
                                        "late_fusion": {"test_headline_mean": 0.2, "test_headline_std": None,
                                                        "test_macro_auroc_mean": 0.6, "avg_rank_auprc": 2.0,
                                                        "n_seeds": 1}}}
    assert adni_detail["methods"] == mimic_detail["methods"]  # the same names in every cohort
    assert (mimic_about["headline"], adni_about["headline"]) == ("macro_auprc", "macro_map")
    assert adni_about == {"cohort": "adni", "headline": "macro_map", "champion_method": "masam",
                          "validation_metric": "val_macro_map"}


def test_the_paired_difference_keeps_its_numbers_in_the_detail_and_its_method_names_beside_them():
    paired = {"a": "masam", "b": "late_fusion", "seed": 42,
              "macro_auprc": {"difference": 0.02, "ci": [-0.01, 0.05], "n_valid_resamples": 50, "p_le_zero": 0.2},
              "macro_auroc": {"difference": -0.01, "ci": [-0.03, 0.01], "n_valid_resamples": 50, "p_le_zero": 0.8}}
    metrics, detail, about = report_metrics(_data("macro_map", 0.6, 0.7, paired), "adni")
    assert "paired_difference" not in metrics
    assert detail["paired_difference"] == {
        "macro_auprc": {"difference": 0.02, "ci_low": -0.01, "ci_high": 0.05, "p_le_zero": 0.2},
        "macro_auroc": {"difference": -0.01, "ci_low": -0.03, "ci_high": 0.01, "p_le_zero": 0.8}}
    assert (about["paired_difference"]["a"], about["paired_difference"]["b"]) == ("masam", "late_fusion")


def test_only_metrics_json_is_a_dvc_metric_and_the_detail_is_a_plain_output():
    report = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["do"]
    assert [next(iter(m)) for m in report["metrics"]] == ["${paths.reports}/${item}/metrics.json"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in report["outs"]]
    assert "${paths.reports}/${item}/metrics_detail.json" in outs
    assert "metrics" not in yaml.safe_load((ROOT / "dvc.yaml").read_text())  # no top-level metrics either


README_RECIPE = {  # the README's `dvc exp show` lines, by what they show
    "champions": "dvc exp show --only-changed --drop 'Created|.*/.*|(mimic|adni)[^.]*\\.'",
    "one cohort": "dvc exp show --drop '.*' --keep 'Experiment|mimic-phenotype\\.'",
}


def test_the_readme_gives_the_recipe_this_file_checks():
    readme = (ROOT / "README.md").read_text()
    for line in README_RECIPE.values():
        assert line in readme, line


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_readmes_exp_show_recipe_fits_200_columns_with_the_default_sweep(tmp_path):
    """A git + DVC project shaped like this one: the report stage's metrics for the three cohorts and the five
    default methods, a baseline commit and one experiment that changes two params; each recipe's table, as
    DVC prints it 200 columns wide, has no column cut off ("…") and shows what it promises."""
    methods = yaml.safe_load((ROOT / "params.yaml").read_text())["sweep"]["methods"]
    cohorts = ["mimic-phenotype", "mimic-mortality", "adni"]
    (tmp_path / "write.py").write_text(
        "import json, os, sys, yaml\n"
        "p = yaml.safe_load(open('params.yaml'))\n"
        "shift = 0.01 * len(p['sweep']['seeds'])\n"
        f"for i, c in enumerate({cohorts!r}):\n"
        "    os.makedirs(f'reports/{c}', exist_ok=True)\n"
        "    m = {'champion': {c: 0.412345 + shift}, c: {m: 0.3 + 0.01 * k + shift + 0.001 * i\n"
        "                                                for k, m in enumerate(p['sweep']['methods'])}}\n"
        "    json.dump(m, open(f'reports/{c}/metrics.json', 'w'))\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"sweep": {"cohorts": cohorts, "methods": methods, "seeds": [42]}, "train": {"epochs": 10}}))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": {
        "foreach": "${sweep.cohorts}",
        "do": {"cmd": f"{sys.executable} write.py", "deps": ["write.py"], "params": ["sweep", "train"],
               "metrics": [{"reports/${item}/metrics.json": {"cache": False}}]}}}}))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path), "COLUMNS": "200",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*args: str) -> str:
        done = subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-1500:]
        return done.stdout

    run("git", "init", "-q")
    run(str(DVC), "init", "-q")
    run(str(DVC), "config", "core.analytics", "false")
    run(str(DVC), "repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    run(str(DVC), "exp", "run", "-q", "-S", "sweep.seeds=[42,123]", "-S", "train.epochs=20", "-n", "two-seeds")
    for what, line in README_RECIPE.items():
        table = run(str(DVC), *shlex.split(line)[1:], "--no-pager")
        header = next((row for row in table.splitlines() if "Experiment" in row), table)
        assert "…" not in table and max(len(row.rstrip()) for row in table.splitlines()) <= 200, (what, table)
        if what == "champions":
            assert [c for c in header.split() if c.startswith("champion.")] == [f"champion.{c}" for c in cohorts]
            assert "sweep.seeds" in header and "train.epochs" in header and "/" not in header
        else:
            assert header.split()[1:] == [f"mimic-phenotype.{m}" for m in methods], table

