"""dvc.yaml output flags: what DVC keeps between runs, what stays out of a DVC remote, what git tracks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _outs(stage: str) -> dict[str, dict]:
    body = STAGES[stage].get("do", STAGES[stage])
    return {next(iter(o)) if isinstance(o, dict) else o: (next(iter(o.values())) if isinstance(o, dict) else {})
            for o in body["outs"]}


def test_run_folders_persist_so_an_interrupted_repro_resumes_from_the_last_checkpoint():
    (flags,) = _outs("train").values()
    assert flags["persist"] is True


def test_outputs_derived_from_credentialed_data_are_never_pushed_to_a_dvc_remote():
    # cohorts (patient rows), trained weights, per-sample predictions with ids
    for stage in ("etl_mimic", "etl_mimic_partial", "etl_adni", "train", "evaluate"):
        assert all(flags.get("push") is False for flags in _outs(stage).values()), stage


def test_the_small_metrics_and_plot_files_are_kept_by_git_not_the_dvc_cache():
    report = _outs("report")
    body = STAGES["report"]["do"]
    metrics = {next(iter(m)): next(iter(m.values())) for m in body["metrics"]}
    small = {**{k: v for k, v in report.items() if k.endswith(("plots", "metrics_about.json", "metrics_detail.json"))},
             **metrics}
    assert len(small) == 4 and all(flags == {"cache": False} for flags in small.values())
    paths = [p.replace("${paths.reports}", "reports").replace("${item}", "adni") for p in small]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths, "reports/adni/plots/pr/CN.json"],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == []
    big = ["reports/adni/runs/x", "reports/adni/analysis/x", "reports/adni/report.html", "runs/adni/x"]
    assert subprocess.run(["git", "check-ignore", "--no-index", *big], cwd=ROOT,
                          capture_output=True, text=True).stdout.split() == big
