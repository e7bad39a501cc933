"""Say where a finished pipeline's outputs are: reports, registered models, MLflow UI.

`make demo` ends with this; it reads only what earlier stages wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from clinfuse.pipeline.config import load_params

NAME = "summary"
HELP = "print where the reports, runs and registered models are and how to open the MLflow UI"


def add_arguments(parser) -> None:
    parser.add_argument("--elapsed", type=int, default=None, help="seconds the pipeline took (printed)")


def run(args) -> int:
    from clinfuse.pipeline.tracking import resolve_tracking_uri

    params = load_params(args.params)
    reports = Path(params.paths.reports)
    pages = sorted(reports.glob("*/report.html"))
    runs = sorted(p.parent for p in Path(params.paths.runs).glob("*/*/train_summary.json"))
    print()
    print("clinfuse: pipeline outputs")
    print(f"  processed cohorts: {params.paths.processed}/")
    print(f"  training runs:     {len(runs)} under {params.paths.runs}/")
    for page in pages:
        print(f"  report:            {page.resolve()}")
    for registry_file in sorted(reports.glob("*/registry.json")):
        for entry in json.loads(registry_file.read_text()):
            mark = f"   alias champion -> models:/{entry['name']}@champion" if entry.get("champion") else ""
            print(f"  registered model:  models:/{entry['name']}/{entry['version']} ({entry['method']}){mark}")
    uri = resolve_tracking_uri()
    print(f"  MLflow tracking:   {uri}")
    if uri.startswith("sqlite:"):
        print(f"  MLflow UI:         .venv/bin/mlflow ui --backend-store-uri {uri}   (then open http://127.0.0.1:5000)")
    if len(params.sweep.seeds) < 2:
        print(f"  note: one seed per method ({params.sweep.seeds[0] if params.sweep.seeds else 'none'}): a smoke test of the "
              "pipeline, not a comparison; training variance is not measured (README: make demo-full)")
    if args.elapsed is not None:
        print(f"done in {args.elapsed // 60} min {args.elapsed % 60} s")
    return 0
