"""Evaluate -> report -> register -> predict on a tiny cohort with a temporary MLflow store."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.pipeline.cli import main
from clinfuse.pipeline.results import slug as _slug
from tests.fixtures.cohorts import write_cohort


class Tables(HTMLParser):
    """Collects every <table id=...>: its header cells and row count; and <img> data URIs."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._current, self._in_th, self.external = {}, 0, None, False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._current = a.get("id")
            self.tables[self._current] = {"headers": [], "rows": 0}
        elif tag == "th" and self._current:
            self._in_th = True
            self.tables[self._current]["headers"].append("")
        elif tag == "tr" and self._current:
            self.tables[self._current]["rows"] += 1
        elif tag == "img":
            self.images += 1
            if not a.get("src", "").startswith("data:image/png;base64,"):
                self.external.append(a.get("src"))
        elif tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.external.append(a.get("href") or a.get("src"))

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False
        elif tag == "table":
            self._current = None

    def handle_data(self, data):
        if self._in_th and self._current:
            self.tables[self._current]["headers"][-1] += data.strip()


def _leaves(tree, out: list) -> None:
    """Every leaf value of a nested dict."""
    for value in tree.values():
        _leaves(value, out) if isinstance(value, dict) else out.append(value)


def test_evaluation_writes_predictions_in_the_contract_layout(pipeline_run):
    root, _, _ = pipeline_run
    pred = pd.read_parquet(root / "eval" / "masam-s1" / "predictions_test.parquet")
    assert {"patient_id", "split", "sex", "age", "race", "has_ehr", "has_cxr", "label__Sepsis", "prob__Sepsis"} <= set(pred)
    assert set(pred["split"]) == {"test"}
    metrics = json.loads((root / "eval" / "masam-s1" / "metrics.json").read_text())
    assert metrics["ci"]["n_resamples"] == 50 and "calibration" in metrics and metrics["subgroups"]


def test_report_renders_tables_and_embedded_figures(pipeline_run):
    root, _, _ = pipeline_run
    parser = Tables()
    parser.feed((root / "report" / "report.html").read_text())
    t = parser.tables
    assert {"cohort", "per-label", "calibration", "comparison", "subgroups", "settings"} <= set(t)
    assert t["per-label"]["headers"][:3] == ["label", "prevalence", "positives"]
    assert "masam AUPRC" in t["per-label"]["headers"] and "late_fusion AUROC" in t["per-label"]["headers"]
    assert t["per-label"]["rows"] == 1 + 3  # header + 3 labels
    assert t["comparison"]["rows"] == 1 + 2
    assert parser.images >= 2 and parser.external == []
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    cohort = "mimic-phenotype"  # the fixture's cohort folder
    assert set(metrics) == {"champion", cohort} and set(metrics[cohort]) == {"late_fusion", "masam"}
    detail = json.loads((root / "report" / "metrics_detail.json").read_text())
    assert set(detail["methods"]) == {"late_fusion", "masam"} and "paired_difference" in detail
    for document in (metrics, detail):
        numbers = []
        _leaves(document, numbers)
        assert numbers and all(v is None or isinstance(v, (int, float)) for v in numbers)  # DVC compares numbers
    about = json.loads((root / "report" / "metrics_about.json").read_text())
    champion = json.loads((root / "eval" / f"{about['champion_method']}-s1" / "metrics.json").read_text())
    assert metrics["champion"][cohort] == pytest.approx(champion["test"]["macro_auprc"])
    assert detail["champion"]["test_headline"] == metrics["champion"][cohort]
    assert about["headline"] == "macro_auprc" and about["champion_method"] in {"late_fusion", "masam"}
    verdicts = json.loads((root / "report" / "verdicts.json").read_text())
    assert [(v["method"], v["reference"]) for v in verdicts["verdicts"]] == [("masam", "late_fusion")]
    assert verdicts["verdicts"][0]["line"] == about["verdicts"][0]
    assert verdicts["champion_margin"]["champion"]["method"] == about["champion_method"]


def test_the_registry_record_says_whether_the_champions_validation_lead_is_within_noise(pipeline_run):
    root, _, _ = pipeline_run
    record = json.loads((root / "registry.json").read_text())[0]
    margin = json.loads((root / "report" / "verdicts.json").read_text())["champion_margin"]
    assert record["validation_margin"]["within_noise"] == margin["within_noise"]
    assert record["validation_margin"]["runner_up"]["method"] != record["method"]


def test_registered_champion_loads_and_predicts(pipeline_run, tmp_path):
    root, base, cohort = pipeline_run
    record = json.loads((root / "registry.json").read_text())[0]
    assert record["name"] == "mimic-phenotype" and record["champion"] is True
    out = tmp_path / "pred.parquet"
    assert main(base + ["predict", "--model", "models:/mimic-phenotype@champion", "--cohort", str(cohort),
                        "--out", str(out), "--split", "test"]) == 0
    pred = pd.read_parquet(out)
    evaluated = pd.read_parquet(root / "eval" / f"{record['method']}-s1" / "predictions_test.parquet")
    assert (pred["prob__Sepsis"] - evaluated["prob__Sepsis"]).abs().max() < 1e-5


def test_model_card_describes_inputs_and_metrics(pipeline_run):
    import mlflow

    from clinfuse.pipeline.registry import download_registered_model

    root, _, _ = pipeline_run
    record = json.loads((root / "registry.json").read_text())[0]
    mlflow.set_tracking_uri(record["tracking_uri"])
    _, card = download_registered_model(f"models:/{record['name']}/{record['version']}")
    inputs = card["network_data_format"]["inputs"]
    assert inputs["ehr"]["shape"] == [-1, 48, 24] and inputs["cxr"]["value_range"] == [0, 1]
    assert card["network_data_format"]["argument_order"] == ["ehr", "cxr", "has_ehr", "has_cxr"]
    assert "macro_auprc" in card["evaluation"]["headline"] and card["intended_use"]
    assert card["training"]["method"] == record["method"]


def test_champion_alias_moves_only_when_validation_improves(pipeline_run, tmp_path):
    import mlflow

    root, base, cohort = pipeline_run
    record = json.loads((root / "registry.json").read_text())[0]
    # register the same champion again: equal validation metric -> alias stays on the first version
    assert main(base + ["register", "--cohort", str(cohort), "--runs", str(root / "runs"), "--evaluations",
                        str(root / "eval"), "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())[0]
    assert again["version"] == record["version"] + 1 and again["champion"] is False
    mlflow.set_tracking_uri(record["tracking_uri"])
    alias = mlflow.MlflowClient().get_model_version_by_alias("mimic-phenotype", "champion")
    assert int(alias.version) == record["version"]


class Scaled(torch.nn.Module):
    """A one-input exportable: probabilities sigmoid(w x)."""

    def __init__(self, w: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return torch.sigmoid(self.w * x)


def test_registry_moves_champion_to_a_better_version_and_not_to_a_worse_one(pipeline_run):
    import mlflow

    from clinfuse.pipeline.registry import CHAMPION, register_model

    root, _, _ = pipeline_run
    mlflow.set_tracking_uri(json.loads((root / "registry.json").read_text())[0]["tracking_uri"])
    example = (np.array([[0.5], [-1.0]], dtype=np.float32),)
    card = {"task": "toy", "training": {"method": "scaled"}}
    first = register_model(Scaled(1.0), example, ["x"], card, "toy-task", 0.60)
    better = register_model(Scaled(2.0), example, ["x"], card, "toy-task", 0.65)
    worse = register_model(Scaled(3.0), example, ["x"], card, "toy-task", 0.62)
    assert (first.champion_moved, better.champion_moved, worse.champion_moved) == (True, True, False)
    assert worse.previous_champion_metric == pytest.approx(0.65)
    alias = mlflow.MlflowClient().get_model_version_by_alias("toy-task", CHAMPION)
    assert int(alias.version) == better.version == first.version + 1


def test_unknown_model_is_a_one_line_error(pipeline_run, tmp_path, capsys):
    _, base, cohort = pipeline_run
    code = main(base + ["predict", "--model", "models:/no-such-model@champion", "--cohort", str(cohort),
                        "--out", str(tmp_path / "x.parquet")])
    assert code == 2 and "cannot be loaded" in capsys.readouterr().err


def test_predict_refuses_a_cohort_of_other_modalities(pipeline_run, tmp_path, capsys):
    _, base, _ = pipeline_run
    adni = write_cohort(tmp_path / "adni", "adni", n=12)
    code = main(base + ["predict", "--model", "models:/mimic-phenotype@champion", "--cohort", str(adni),
                        "--out", str(tmp_path / "x.parquet")])
    assert code == 2 and "trained for" in capsys.readouterr().err


def test_predict_refuses_a_cohort_of_another_task_with_the_same_inputs(pipeline_run, tmp_path, capsys):
    """The phenotype model on a mortality cohort: shapes agree, the task does not."""
    _, base, _ = pipeline_run
    cohort = write_cohort(tmp_path / "mimic-mortality", "mimic", n=12)
    samples = pd.read_parquet(cohort / "samples.parquet")
    samples["in_hospital_mortality"] = samples["Sepsis"]
    samples.to_parquet(cohort / "samples.parquet", index=False)
    manifest = json.loads((cohort / "manifest.json").read_text())
    manifest.update(task="mortality", task_type="binary", label_columns=["in_hospital_mortality"])
    (cohort / "manifest.json").write_text(json.dumps(manifest))
    code = main(base + ["predict", "--model", "models:/mimic-phenotype@champion", "--cohort", str(cohort),
                        "--out", str(tmp_path / "x.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "cohort task is 'mortality' but models:/mimic-phenotype@champion was trained for 'phenotype'" in err
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("size", ["0", "-4"])
def test_predict_refuses_a_batch_size_below_one(pipeline_run, tmp_path, capsys, size):
    _, base, cohort = pipeline_run
    code = main(base + ["predict", "--model", "models:/mimic-phenotype@champion", "--cohort", str(cohort),
                        "--out", str(tmp_path / "x.parquet"), "--batch-size", size])
    assert code == 2 and "--batch-size must be a positive number" in capsys.readouterr().err


def _cells(html: str, table_id: str) -> list[list[str]]:
    """Text of each body row's cells of the table with this id."""
    import re

    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_report_has_one_curve_figure_per_evaluable_label(pipeline_run):
    root, _, _ = pipeline_run
    html = (root / "report" / "report.html").read_text()
    metrics = json.loads((root / "eval" / "masam-s1" / "metrics.json").read_text())
    evaluable = [lab for lab in metrics["labels"] if lab not in metrics["test"]["excluded_labels"]]
    import re

    assert re.findall(r'<figure class="curve" data-label="([^"]*)"', html) == evaluable



def test_the_dvc_plot_files_hold_a_curve_of_every_method_per_label(pipeline_run):
    root, _, _ = pipeline_run
    for kind, y in (("pr", "precision"), ("roc", "tpr")):
        for method in ("late_fusion", "masam"):
            curves = json.loads((root / "eval" / f"{method}-s1" / f"curves_{kind}.json").read_text())
            for label in {r["label"] for r in curves}:
                records = json.loads((root / "report" / "plots" / kind / f"{_slug(label)}.json").read_text())
                # this method's records are its run's curve for the label, unchanged, tagged with the method
                mine = [{k: v for k, v in r.items() if k not in ("method", "seed")} for r in records
                        if r["method"] == method]
                assert mine == [r for r in curves if r["label"] == label], (kind, label, method)
                assert {r["seed"] for r in records} == {1} and all(y in r for r in records)
        files = sorted((root / "report" / "plots" / kind).glob("*.json"))
        assert files and all({r["method"] for r in json.loads(f.read_text())} == {"late_fusion", "masam"}
                             for f in files)

def test_prevalence_table_and_per_label_table_round_the_same_way(pipeline_run):
    root, _, _ = pipeline_run
    html = (root / "report" / "report.html").read_text()
    test_column = {r[0]: r[-1] for r in _cells(html, "prevalence")}
    per_label = {r[0].replace("too few events", "").strip(): r[1] for r in _cells(html, "per-label")}
    assert test_column == per_label


def test_report_names_runs_commit_command_and_methods(pipeline_run):
    root, _, _ = pipeline_run
    html = (root / "report" / "report.html").read_text()
    for method in ("late_fusion", "masam"):
        run_id = json.loads((root / "eval" / f"{method}-s1" / "metrics.json").read_text())["mlflow_run_id"]
        assert run_id and run_id in html
    assert "clinfuse --params" in html and " report --cohort " in html
    assert re.search(r"<code>[0-9a-f]{40}</code>", html)
    assert "Sharpness-Aware" in html and "validation macro AUPRC" in html


def test_registered_version_description_names_metric_split_and_rounds(pipeline_run):
    import mlflow

    root, _, _ = pipeline_run
    record = json.loads((root / "registry.json").read_text())[0]
    version = mlflow.MlflowClient().get_model_version(record["name"], str(record["version"]))
    assert re.search(r"test macro AUPRC \d\.\d{3}\b", version.description)
    assert re.search(r"validation macro AUPRC \d\.\d{3} \(selects the champion\)", version.description)
    assert not re.search(r"\d\.\d{4}", version.description)


def test_reports_name_sources_relative_to_their_export_never_by_the_site_path(pipeline_run, tmp_path):
    import shutil

    root, base, cohort = pipeline_run
    copy = tmp_path / "mimic-phenotype"
    shutil.copytree(cohort, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["sources"] = {"hosp/patients": {"path": "/site/secret-project/raw/mimic-iv/hosp/patients.csv.gz",
                                             "bytes": 10, "modified": "2026-01-01"}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(base + ["report", "--cohort", str(copy), "--runs", str(root / "eval"), "--out",
                        str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "secret-project" not in html
    assert "mimic-iv/hosp/patients.csv.gz" in html


def test_the_model_card_names_no_site_path(pipeline_run):
    from clinfuse.pipeline.registry import download_registered_model

    root, _, _ = pipeline_run
    record = json.loads((root / "registry.json").read_text())[0]
    _, card = download_registered_model(f"models:/{record['name']}/{record['version']}")
    assert card["data_source"]["cohort"] == "mimic-phenotype"
    assert str(root) not in json.dumps(card["data_source"])
