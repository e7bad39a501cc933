"""Why a method wins: sharpness per encoder, loss landscapes, gradient alignment, linear probes,
label-noise robustness, sensitivity and efficiency, for every run of a cohort's sweep.

  clinfuse analyze --runs-dir runs/mimic-phenotype --evaluations reports/mimic-phenotype/runs \
                   --out reports/mimic-phenotype/analysis

Settings come from params.yaml `analyze:`; the runs analysed are `sweep.methods` x
`sweep.seeds` (`--methods` / `--seeds` override). Figures and numbers go to --out and,
for tracked runs, to MLflow (artifacts under `analysis/`).
"""

from __future__ import annotations

from pathlib import Path

from clinfuse.pipeline.config import load_params

NAME = "analyze"
HELP = "flatness, landscapes, alignment, probes, noise, sensitivity and efficiency of a cohort's runs"


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", required=True, help="a cohort's runs folder (runs/<cohort>)")
    parser.add_argument("--evaluations", default=None, help="its evaluations (reports/<cohort>/runs), if any")
    parser.add_argument("--out", required=True, help="output folder (reports/<cohort>/analysis)")
    parser.add_argument("--methods", nargs="+", default=None, help="override sweep.methods")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="override sweep.seeds")
    parser.add_argument("--no-tracking", action="store_true", help="do not attach the figures to MLflow runs")


def run(args) -> int:
    from clinfuse.etl.atomic import check_replaceable
    from clinfuse.etl.errors import InputError
    from clinfuse.pipeline.stages.analyze import analyze_cohort

    params = load_params(args.params)
    runs = Path(args.runs_dir)
    if not runs.is_dir():
        raise InputError(f"{runs}: runs folder not found (train the sweep first)")
    check_replaceable(Path(args.out), "analysis")
    message = analyze_cohort(runs, Path(args.evaluations) if args.evaluations else None, Path(args.out),
                             args.methods or params.sweep.methods, args.seeds or params.sweep.seeds,
                             params.analyze, log_mlflow=not args.no_tracking)
    print(message)
    return 0
