"""Write the per-task HTML report (and DVC metrics and plot data) from evaluated runs.

  clinfuse report --cohort data/processed/mimic-phenotype --runs reports/mimic-phenotype/runs \
                  --out reports/mimic-phenotype

`--runs` takes folders written by `clinfuse evaluate` (one evaluated run, or a folder of them).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_params

NAME = "report"
HELP = "write the per-task HTML report from evaluated runs"


def add_arguments(parser) -> None:
    parser.add_argument("--cohort", required=True, help="processed cohort folder")
    parser.add_argument("--runs", nargs="+", required=True, help="evaluated run folder(s) (clinfuse evaluate --out)")
    parser.add_argument("--out", required=True, help="report folder (report.html, metrics.json, plots/)")
    parser.add_argument("--analysis", default=None, help="analysis folder (clinfuse analyze --out): the Why section")
    parser.add_argument("--summary-link", default=None, help="relative link to the cross-cohort summary page")


def run(args) -> int:
    from pipeline.stages.report import build_report

    params = load_params(args.params)
    e, t = params.evaluate, params.train
    settings = {"bootstrap resamples": e.n_resamples, "CI level": e.ci_level,
                "min subgroup patients": e.min_subgroup_patients, "model preset": t.preset, "epochs": t.epochs,
                "batch size": t.batch_size, "optimizer": f"{t.optimizer} lr {t.lr} wd {t.weight_decay}",
                "schedule": t.schedule, "seeds": params.sweep.seeds}
    analysis = Path(args.analysis) if args.analysis else None
    if analysis is not None and not (analysis / "analysis.json").is_file():
        from etl.errors import InputError

        raise InputError(f"{analysis}/analysis.json: missing; run `clinfuse analyze` first")
    print(build_report(Path(args.cohort), [Path(r) for r in args.runs], Path(args.out), params.sweep.methods, settings,
                       analysis, args.summary_link))
    return 0
