"""Write the per-task HTML report (and DVC metrics and plot data) from evaluated runs.

  clinfuse report --cohort data/processed/mimic-phenotype --runs reports/mimic-phenotype/runs \
                  --out reports/mimic-phenotype

`--runs` takes folders written by `clinfuse evaluate` (one evaluated run, or a folder of them).
"""

from __future__ import annotations

from pathlib import Path

from clinfuse.pipeline.config import load_params

NAME = "report"
HELP = "write the per-task HTML report from evaluated runs"


def add_arguments(parser) -> None:
    parser.add_argument("--cohort", required=True, help="processed cohort folder")
    parser.add_argument("--runs", nargs="+", required=True, help="evaluated run folder(s) (clinfuse evaluate --out)")
    parser.add_argument("--out", required=True, help="report folder (report.html, metrics.json, plots/)")
    parser.add_argument("--analysis", default=None, help="analysis folder (clinfuse analyze --out): the Why section")
    parser.add_argument("--tuning", default=None,
                        help="tuning folder of the cohort (<paths.tuning>/<cohort>, clinfuse tune): the Tuning section")
    parser.add_argument("--summary-link", default=None, help="relative link to the cross-cohort summary page")


def run(args) -> int:
    import os

    from clinfuse.evaluation.report_data import report_settings
    from clinfuse.pipeline.provenance import command_line, git_state
    from clinfuse.pipeline.stages.report import build_report

    params = load_params(args.params)
    settings = report_settings(params.sweep, params.analyze, params.evaluate, params.train)
    analysis = Path(args.analysis) if args.analysis else None
    if analysis is not None and not (analysis / "analysis.json").is_file():
        from clinfuse.etl.errors import InputError

        raise InputError(f"{analysis}/analysis.json: missing; run `clinfuse analyze` first")
    argv = (["--params", args.params] if args.params != "params.yaml" else [])
    argv += ["report", "--cohort", args.cohort, "--runs", *args.runs, "--out", args.out]
    if args.analysis:
        argv += ["--analysis", args.analysis]
    if args.summary_link:
        argv += ["--summary-link", args.summary_link]
    if args.tuning:
        argv += ["--tuning", args.tuning]
    provenance = {**git_state(), "command": command_line(argv), "working_directory": os.getcwd()}
    print(build_report(Path(args.cohort), [Path(r) for r in args.runs], Path(args.out), settings, provenance, analysis,
                       args.summary_link, Path(args.tuning) if args.tuning else None))
    return 0
