"""`dvc repro` with a tuning budget on a tiny configuration: tune on validation, train every seed with the
selection, report it (the issue's "one command")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Two methods, two trials each (1 epoch), two seeds: the smallest run that shows every stage's wiring.
TUNING_PARAMS = """\
paths: {raw: data/raw, mimic_iv: data/raw/mimic-iv, mimic_cxr: data/raw/mimic-cxr-jpg, adni: data/raw/adni,
        processed: data/processed, runs: runs, reports: reports, tuning: tuning}
synth: {subjects: 90, seed: 3, adni_subjects: 50, mri_size: 12}
etl_mimic: {cxr_size: 16, workers: 1, threads: 1, memory_limit: 512MB}
etl_adni: {mri_size: 12, workers: 1}
sweep: {cohorts: [mimic-phenotype], methods: [late_fusion, masam], seeds: [1, 2], partially_paired: []}
registry: {example_rows: 2}
evaluate: {n_resamples: 50}
train: {epochs: 1, batch_size: 16, num_threads: 1, device: cpu, log_every: 2}
analyze: {hutchinson_vectors: 2, power_iters: 2, batch_size: 8, landscape_points_1d: 3, landscape_points_2d: 3,
          landscape_samples: 16, probe_max_train: 100, efficiency_batch: 2, efficiency_repeats: 2, efficiency_warmup: 1}
tune: {budget: 2}
"""


@pytest.mark.e2e
def test_dvc_repro_with_a_budget_tunes_on_validation_then_trains_every_seed_with_the_selection(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("clinfuse", "etl", "models", "evaluation", "pipeline", "configs"):
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    (work / "params.yaml").write_text(TUNING_PARAMS)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "CLINFUSE_REPO_ROOT": str(work)}
    dvc = str(Path(bin_dir) / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=work, env=env, check=True)
    first = subprocess.run([dvc, "repro", "report@mimic-phenotype"], cwd=work, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for method in ("late_fusion", "masam"):
        folder = work / "tuning" / "mimic-phenotype" / method
        selected = yaml.safe_load((folder / "selected.yaml").read_text())
        study = json.loads((folder / "study.json").read_text())
        assert selected["tuning"]["trials"] == 2 and len([t for t in study["trials"] if t["counted"]]) == 2
        assert selected["tuning"]["value"] == study["selected"]["value"]
        for seed in (1, 2):  # every seed trains with the tuned options and learning rate
            config = yaml.safe_load((work / "runs" / "mimic-phenotype" / f"{method}-s{seed}" / "config.yaml").read_text())
            for key, value in selected["options"].items():
                assert config["method"]["options"][key] == value
            assert config["train"]["lr"] == selected["train"]["lr"]
    report = (work / "reports" / "mimic-phenotype" / "report.html").read_text()
    assert 'id="tuning"' in report and "validation score by hyperparameter, masam" in report
    second = subprocess.run([dvc, "repro", "report@mimic-phenotype"], cwd=work, env=env, capture_output=True,
                            text=True)
    assert second.returncode == 0 and "Running stage" not in second.stdout
