"""Evaluate trained runs on the test split: per-sample predictions, per-label AUPRC/AUROC
with 95 % patient-bootstrap CIs, calibration, subgroup metrics, PR/ROC curve data.

  clinfuse evaluate --run runs/mimic-phenotype/masam-s42 --out reports/mimic-phenotype/runs/masam-s42
  clinfuse evaluate --runs-dir runs/mimic-phenotype --out reports/mimic-phenotype/runs
"""

from __future__ import annotations

from pathlib import Path

from clinfuse.etl.errors import InputError
from clinfuse.pipeline.config import load_params
from clinfuse.pipeline.runs import run_name

NAME = "evaluate"
HELP = "evaluate trained runs on the test split (metrics with CIs, calibration, subgroups)"


def add_arguments(parser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--run", help="one run folder (runs/<cohort>/<method>-s<seed>)")
    group.add_argument("--runs-dir", help="a cohort's runs folder: evaluates the runs of params sweep")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--all", action="store_true", help="with --runs-dir: every finished run, not only the sweep's")


def run(args) -> int:
    from clinfuse.pipeline.stages.evaluate import evaluate_runs

    params = load_params(args.params)
    if args.run:
        evaluate_runs([Path(args.run)], Path(args.out), params.evaluate, single=True)
        return 0
    root = Path(args.runs_dir)
    if args.all:
        runs = sorted(p.parent for p in root.glob("*/train_summary.json"))
    else:
        runs = [root / run_name(m, s) for m in params.sweep.methods for s in params.sweep.seeds]
        missing = [str(r) for r in runs if not (r / "train_summary.json").is_file()]
        if missing:
            raise InputError(f"{missing[0]}: not a finished run (no train_summary.json); train it first "
                             f"or use --all for the runs that exist")
    if not runs:
        raise InputError(f"{root}: no finished runs found")
    evaluate_runs(runs, Path(args.out), params.evaluate, single=False)
    return 0
