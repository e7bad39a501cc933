"""`dvc repro` end to end on a tiny synthetic configuration: the wiring `make demo` relies on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.evaluation.test_dvc_plots import FETCHED_URL

ROOT = Path(__file__).resolve().parents[1]
TINY_PARAMS = """\
paths: {raw: data/raw, mimic_iv: data/raw/mimic-iv, mimic_cxr: data/raw/mimic-cxr-jpg, adni: data/raw/adni,
        processed: data/processed, runs: runs, reports: reports, tuning: tuning}
synth: {subjects: 90, seed: 3, adni_subjects: 50, mri_size: 12}
etl_mimic: {cxr_size: 16, workers: 1, threads: 1, memory_limit: 512MB}
etl_adni: {mri_size: 12, workers: 1}
sweep: {cohorts: [mimic-phenotype, mimic-mortality, adni, mimic-phenotype-partial],
        methods: [late_fusion, masam, medfuse, drfuse, unimodal_image], seeds: [1], partially_paired: [phenotype]}
evaluate: {n_resamples: 50}
registry: {example_rows: 2}
train: {epochs: 1, batch_size: 16, num_threads: 1, device: cpu, log_every: 2, alignment_every: 2}
tune: {}
analyze: {hutchinson_vectors: 2, hutchinson_max_vectors: 2, power_iters: 2, batch_size: 8, landscape_points_1d: 3, landscape_points_2d: 3,
          landscape_samples: 16, probe_max_train: 100, efficiency_batch: 2, efficiency_repeats: 2, efficiency_warmup: 1}
"""


@pytest.mark.e2e
def test_dvc_repro_runs_every_stage_then_has_nothing_to_do(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("clinfuse", "etl", "models", "evaluation", "pipeline", "configs"):
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    (work / "params.yaml").write_text(TINY_PARAMS)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "CLINFUSE_REPO_ROOT": str(work)}
    dvc = str(Path(bin_dir) / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=work, env=env, check=True)
    with (work / ".dvc" / "config").open("a") as config:  # the project's plots section: the offline page
        config.write("[plots]" + (ROOT / ".dvc" / "config").read_text().split("[plots]", 1)[1])
    first = subprocess.run([dvc, "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for cohort in ("mimic-phenotype", "mimic-mortality", "adni", "mimic-phenotype-partial"):
        assert (work / "reports" / cohort / "report.html").is_file()
        assert (work / "reports" / cohort / "registry.json").is_file()
        for method in ("masam", "medfuse", "drfuse"):
            assert (work / "runs" / cohort / f"{method}-s1" / "checkpoint_best.pt").is_file()
        assert (work / "reports" / cohort / "analysis" / "figures" / "flatness.png").is_file()
        assert 'id="why"' in (work / "reports" / cohort / "report.html").read_text()
    phenotype = (work / "reports" / "mimic-phenotype" / "report.html").read_text()
    assert 'id="ceiling"' in phenotype and 'id="why-claims"' in phenotype  # synthetic: the oracle ceiling
    assert 'id="ceiling"' not in (work / "reports" / "adni" / "report.html").read_text()
    assert 'id="table1"' in (work / "reports" / "summary.html").read_text()
    # tune.budget 0 (the default): each method's selected.yaml is its config as it is
    assert "budget: 0" in (work / "tuning" / "adni" / "masam" / "selected.yaml").read_text()
    partial = (work / "reports" / "mimic-phenotype-partial" / "report.html").read_text()
    assert 'id="presence"' in partial and "cxr withheld AUPRC" in partial
    assert '"name": "mimic-phenotype-partial"' in (work / "reports" / "mimic-phenotype-partial" / "registry.json").read_text()
    second = subprocess.run([dvc, "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert second.returncode == 0 and "Running stage" not in second.stdout
    _check_dvc_views(dvc, work, env)
    summary = subprocess.run([str(Path(bin_dir) / "clinfuse"), "summary"], cwd=work, env=env, capture_output=True,
                             text=True)
    assert "models:/mimic-phenotype@champion" in summary.stdout and "report.html" in summary.stdout


def _check_dvc_views(dvc: str, work: Path, env: dict) -> None:
    """What `dvc plots show` and `dvc exp show` get from a finished pipeline: a page that loads nothing from
    the network with a line per method in every chart, and metric keys no two cohorts share."""
    methods = {"late_fusion", "masam", "medfuse", "drfuse", "unimodal_image"}
    shown = subprocess.run([dvc, "plots", "show", "-o", "dvc_plots"], cwd=work, env=env, capture_output=True,
                           text=True)
    assert shown.returncode == 0, shown.stderr[-3000:]
    page = (work / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert FETCHED_URL.search(page) is None
    # a label without positives in a tiny test split has no curve file: DVC writes an empty spec for it
    specs = [spec for s in re.findall(r"var spec = (\{.*?\});\n\s*vegaEmbed", page, re.DOTALL)
             if (spec := json.loads(s))]
    assert len(specs) >= 2 * (1 + 3)  # at least mortality's and ADNI's labels
    for spec in specs:
        assert {r["method"] for r in spec["data"]["values"]} == methods, spec["title"]
    keys: list[str] = []
    for path in sorted((work / "reports").glob("*/metrics.json")):
        document = json.loads(path.read_text())
        cohort = path.parent.name
        assert document == {"champion": {cohort: document["champion"][cohort]},
                            cohort: {m: document[cohort][m] for m in methods}}, path
        keys += [f"{k}.{inner}" for k, v in document.items() for inner in v]
    assert len(keys) == len(set(keys)) == 4 * (1 + len(methods))  # unique: `dvc exp show` prefixes no path
