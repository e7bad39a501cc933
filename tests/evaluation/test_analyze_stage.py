"""The analyze stage end to end on a tiny cohort: every analysis on every sweep run, the report's
Why section, MLflow artifacts, and the cross-cohort summary page."""

from __future__ import annotations

import json

import mlflow
import pytest

from clinfuse.pipeline.cli import main
from tests.fixtures.cohorts import write_cohort
from tests.fixtures.tracking import tracking_store


@pytest.fixture(scope="module")
def analysed_built(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    params = root / "params.yaml"
    params.write_text(
        "sweep:\n  cohorts: [mimic-phenotype]\n  methods: [late_fusion, masam]\n  seeds: [1]\n"
        "train:\n  epochs: 1\n  batch_size: 8\n  num_threads: 1\n  device: cpu\n  alignment_every: 2\n"
        "evaluate:\n  n_resamples: 20\n  min_subgroup_patients: 3\n"
        "analyze:\n  hutchinson_vectors: 2\n  hutchinson_max_vectors: 2\n  power_iters: 2\n  batch_size: 8\n  landscape_points_1d: 3\n"
        "  landscape_points_2d: 3\n  landscape_samples: 8\n  efficiency_batch: 2\n  efficiency_repeats: 2\n  efficiency_warmup: 1\n"
    )
    cohort = write_cohort(root / "data" / "mimic-phenotype", "mimic", n=40)
    runs, reports = root / "runs" / "mimic-phenotype", root / "reports"
    base = ["--params", str(params)]
    with tracking_store(f"sqlite:///{root / 'mlflow.db'}"):
        for method in ("late_fusion", "masam"):
            assert main(base + ["train", "--cohort", str(cohort), "--method", method, "--seed", "1",
                                "--out", str(runs / f"{method}-s1")]) == 0
        noisy = root / "noisy.yaml"
        noisy.write_text(params.read_text().replace("alignment_every: 2\n", "alignment_every: 0\n  label_noise: 0.25\n"))
        assert main(["--params", str(noisy), "train", "--cohort", str(cohort), "--method", "late_fusion", "--seed", "1",
                     "--out", str(runs / "late_fusion-noise25-s1")]) == 0
        evals = reports / "mimic-phenotype" / "runs"
        assert main(base + ["evaluate", "--runs-dir", str(runs), "--out", str(evals)]) == 0
        analysis = reports / "mimic-phenotype" / "analysis"
        assert main(base + ["analyze", "--runs-dir", str(runs), "--evaluations", str(evals), "--out", str(analysis)]) == 0
        assert main(base + ["report", "--cohort", str(cohort), "--runs", str(evals), "--analysis", str(analysis),
                            "--summary-link", "../summary.html", "--out", str(reports / "mimic-phenotype")]) == 0
        assert main(base + ["tables", "--reports", str(reports)]) == 0
    return root, runs, reports, analysis


@pytest.fixture
def analysed(analysed_built):
    """The analysed sweep, with its MLflow store current for the test."""
    with tracking_store(f"sqlite:///{analysed_built[0] / 'mlflow.db'}"):
        yield analysed_built


def test_every_sweep_run_gets_sharpness_per_encoder_landscapes_and_probes(analysed):
    _, _, _, analysis = analysed
    a = json.loads((analysis / "analysis.json").read_text())
    assert set(a["runs"]) == {"late_fusion-s1", "masam-s1"}
    for r in a["runs"].values():
        assert [f["encoder"] for f in r["flatness"]] == ["ehr", "cxr"]
        assert all(f["n_vectors"] == 2 and f["trace_se"] is not None for f in r["flatness"])
        assert all(f["eigenvalue_status"] in ("ok", "negative", "not converged") for f in r["flatness"])
        assert set(r["landscape"]["scopes"]) == {"all", "ehr", "cxr"}
        grid = r["landscape"]["scopes"]["ehr"]["train_2d"]
        assert len(grid) == 3 and len(grid[0]) == 3
        assert set(r["probes"]) == {"ehr", "cxr"}
        assert r["alignment"] and {"step", "ehr", "cxr"} <= set(r["alignment"][0])
    for name in ("flatness", "landscape_1d", "landscape_2d_train", "landscape_2d_test", "landscape_surface",
                 "alignment", "probes", "label_noise", "efficiency", "dominant_modality"):
        assert (analysis / "figures" / f"{name}.png").stat().st_size > 1000, name


def test_the_landscape_centre_is_the_same_for_every_scope_of_a_run(analysed):
    _, _, _, analysis = analysed
    scopes = json.loads((analysis / "analysis.json").read_text())["runs"]["masam-s1"]["landscape"]["scopes"]
    centres = {name: s["train_2d"][1][1] for name, s in scopes.items()}
    assert len(set(centres.values())) == 1


def test_a_noisy_run_is_recorded_and_plotted_against_its_rate(analysed):
    _, runs, _, analysis = analysed
    summary = json.loads((runs / "late_fusion-noise25-s1" / "train_summary.json").read_text())
    assert summary["label_noise"]["rate"] == 0.25 and summary["label_noise"]["flipped_entries"] > 0
    a = json.loads((analysis / "analysis.json").read_text())
    assert [p[0] for p in a["label_noise"]["late_fusion"]] == [0.0, 0.25]
    assert any(s["analysis"] == "sensitivity" for s in a["skipped"])


def test_the_report_has_a_why_section_and_links_the_summary_page(analysed):
    _, _, reports, _ = analysed
    html = (reports / "mimic-phenotype" / "report.html").read_text()
    assert 'id="why"' in html and 'alt="flatness"' in html and 'href="../summary.html"' in html
    summary = (reports / "summary.html").read_text()
    assert 'id="table1"' in summary and 'id="table6-mimic-phenotype"' in summary and 'id="table7"' in summary
    assert 'href="mimic-phenotype/report.html"' in summary


def test_figures_and_sharpness_are_attached_to_the_mlflow_runs(analysed):
    _, runs, _, _ = analysed
    run_id = json.loads((runs / "masam-s1" / "train_summary.json").read_text())["mlflow_run_id"]
    client = mlflow.MlflowClient()
    names = {f.path for f in client.list_artifacts(run_id, "analysis")}
    assert "analysis/flatness.png" in names and "analysis/analysis.json" in names
    metrics = client.get_run(run_id).data.metrics
    assert "analysis/trace_per_param_ehr" in metrics and "align/gamma_ehr" in metrics


def test_every_sweep_run_gets_a_reliance_table_and_every_method_its_cases(analysed):
    _, runs, reports, analysis = analysed
    ex = json.loads((analysis / "analysis.json").read_text())["explanations"]
    assert set(ex["reliance"]) == {"late_fusion-s1", "masam-s1"} and ex["scale"] == "probability"
    for run in ("late_fusion-s1", "masam-s1"):
        table = (analysis / "explanations" / "reliance" / f"{run}.csv").read_text().splitlines()
        assert table[0] == "label,modality,share,ci_low,ci_high,mean_abs_contribution"
        assert len(table) == 1 + 3 * 2  # three labels x two modalities
    for method in ("late_fusion", "masam"):
        cases = ex["cases"][method]
        assert [s["attribution"].split(" (")[0] for s in cases["sanity"]] == ["Integrated Gradients", "Grad-CAM"]
        for case in cases["cases"]:
            assert set(case["contributions"]) == {"ehr", "cxr"} and case["top_variables"]
            assert not {"subject_id", "stay_id", "hadm_id", "row"} & set(case)  # numbered, never identified
    html = (reports / "mimic-phenotype" / "report.html").read_text()
    assert 'id="reliance"' in html and 'alt="modality reliance per label"' in html
    assert 'id="cases"' in html and "Randomisation check" in html


def test_the_reliance_table_is_an_artifact_of_each_training_run(analysed):
    _, runs, _, _ = analysed
    run_id = json.loads((runs / "late_fusion-s1" / "train_summary.json").read_text())["mlflow_run_id"]
    names = {f.path for f in mlflow.MlflowClient().list_artifacts(run_id, "explanations")}
    assert names == {"explanations/late_fusion-s1.csv"}


def test_the_efficiency_table_gives_medians_with_their_spread_and_says_what_the_memory_is(analysed):
    _, _, reports, analysis = analysed
    eff = json.loads((analysis / "analysis.json").read_text())["efficiency"]
    assert eff["repeats"] == 2 and eff["warmup"] == 1 and "analyze process" in eff["process"]
    for row in eff["methods"].values():
        assert row["step_ms"]["n"] == 2 and row["step_ms"]["q1"] <= row["step_ms"]["median"] <= row["step_ms"]["q3"]
        assert row["peak_memory_mib"] > 0
    html = (reports / "mimic-phenotype" / "report.html").read_text()
    table = html[html.index('id="why-efficiency"'):]
    assert "step (ms): median [IQR]" in table and "2 timed training steps" in table
    assert "Times (CPU time of the measuring process" in table
    assert "Peak tensor memory: peak CPU tensor memory (torch profiler allocation events" in table
