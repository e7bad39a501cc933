"""Write reports/summary.html: the paper's Table 1, 6 and 7 style tables across cohorts.

  clinfuse tables --reports reports --out reports/summary.html

Cohorts and methods come from params.yaml `sweep:`; each cohort needs its evaluated runs
(reports/<cohort>/runs, clinfuse evaluate). Methods in `analyze.proposed` are not baselines.
"""

from __future__ import annotations

from pathlib import Path

from clinfuse.pipeline.config import load_params

NAME = "tables"
HELP = "cross-cohort summary page with the paper's tables (reports/summary.html)"


def add_arguments(parser) -> None:
    parser.add_argument("--reports", default=None, help="reports folder (default: params paths.reports)")
    parser.add_argument("--cohorts", nargs="+", default=None, help="override sweep.cohorts")
    parser.add_argument("--out", default=None, help="output file (default: <reports>/summary.html)")


def run(args) -> int:
    from clinfuse.pipeline.stages.summary_tables import build_summary

    params = load_params(args.params)
    reports = Path(args.reports or params.paths.reports)
    out = Path(args.out) if args.out else reports / "summary.html"
    print(build_summary(reports, args.cohorts or params.sweep.cohorts, out, params.sweep.methods,
                        params.analyze.proposed, Path(params.paths.tuning)))
    return 0
