"""Register a cohort's best run (validation metric) in the MLflow model registry as
`<dataset>-<task>` with a model card, moving the alias `champion` when it beats the
current champion on validation.

  clinfuse register --cohort data/processed/mimic-phenotype --runs runs/mimic-phenotype \
                    --evaluations reports/mimic-phenotype/runs --out reports/mimic-phenotype/registry.json \
                    [--report reports/mimic-phenotype]
"""

from __future__ import annotations

from pathlib import Path

from clinfuse.pipeline.config import load_params

NAME = "register"
HELP = "register the best run of a cohort in the MLflow model registry (alias champion)"


def add_arguments(parser) -> None:
    parser.add_argument("--cohort", required=True, help="processed cohort folder")
    parser.add_argument("--runs", required=True, help="the cohort's runs folder (runs/<cohort>)")
    parser.add_argument("--evaluations", required=True, help="evaluated runs (clinfuse evaluate --out)")
    parser.add_argument("--out", required=True, help="JSON record of what was registered")
    parser.add_argument("--name", default=None, help="registered model name (default: <dataset>-<task>)")
    parser.add_argument("--report", default=None,
                        help="report folder (clinfuse report --out): report.html and its figures are logged "
                             "to the champion's MLflow run")


def run(args) -> int:
    from clinfuse.pipeline.stages.register import register_champion
    from clinfuse.pipeline.tracking import LOCK_TIMEOUT_S, store_errors

    params = load_params(args.params)
    LOCK_TIMEOUT_S.set(params.registry.lock_timeout_s)
    with store_errors(what="registering"):  # a store that fails midway: one line, nothing half-registered
        print(register_champion(Path(args.cohort), Path(args.runs), Path(args.evaluations), Path(args.out),
                                params.registry, args.name, Path(args.report) if args.report else None))
    return 0
