"""Turn raw exports into a processed cohort folder (docs/cohort-format.md).

  clinfuse etl mimic --mimic-iv DIR --mimic-cxr DIR --task phenotype|mortality --out DIR
  clinfuse etl adni  --adni DIR --out DIR

Paths default to params.yaml; the output folder is replaced atomically only
when the stage finishes.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

from clinfuse.etl.atomic import check_replaceable
from clinfuse.pipeline.config import load_params

NAME = "etl"
HELP = "build a processed cohort from raw MIMIC-IV/MIMIC-CXR or ADNI exports"


def _mimic_arguments(parser, stage) -> None:
    parser.add_argument("--task", choices=stage.TASKS, required=True, help="label set of the cohort")
    parser.add_argument("--mimic-iv", default=None, help="MIMIC-IV folder with hosp/ and icu/ (default: params)")
    parser.add_argument("--mimic-cxr", default=None, help="MIMIC-CXR-JPG folder (default: params)")
    parser.add_argument("--cxr-images", default=None,
                        help="folder holding files/p../ images if not --mimic-cxr (e.g. a MIMIC-CXR DICOM copy)")
    parser.add_argument("--out", default=None, help="output cohort folder (default: data/processed/mimic-<task>)")
    parser.add_argument("--partial", action="store_true",
                        help="partially paired cohort: keep stays without a film (etl_mimic.require_cxr: false)")


def _run_mimic(args, stage) -> int:
    params = load_params(args.params)
    mimic_iv = Path(args.mimic_iv or params.paths.mimic_iv)
    mimic_cxr = Path(args.mimic_cxr or params.paths.mimic_cxr)
    images = Path(args.cxr_images) if args.cxr_images else mimic_cxr
    out = Path(args.out or Path(params.paths.processed) / f"mimic-{args.task}")
    check_replaceable(out, "cohort")  # refuse a wrong --out before any work
    settings = params.etl_mimic.model_copy(update={"require_cxr": False}) if args.partial else params.etl_mimic
    print(stage.build_mimic_cohort(mimic_iv, mimic_cxr, images, args.task, out, settings))
    return 0


def _adni_arguments(parser, stage) -> None:
    parser.add_argument("--adni", default=None, help="ADNI folder with ADNIMERGE.csv and MRI/ (default: params)")
    parser.add_argument("--out", default=None, help="output cohort folder (default: data/processed/adni)")


def _run_adni(args, stage) -> int:
    params = load_params(args.params)
    adni = Path(args.adni or params.paths.adni)
    out = Path(args.out or Path(params.paths.processed) / "adni")
    check_replaceable(out, "cohort")  # refuse a wrong --out before any work
    print(stage.build_adni_cohort(adni, out, params.etl_adni))
    return 0


# dataset -> (its stage module, help, its arguments, its run). The stage is imported by name when the
# command line is built, so that each DVC ETL stage depends on its own stage module only.
_DATASETS = {
    "mimic": ("clinfuse.pipeline.stages.etl_mimic", "MIMIC-IV + MIMIC-CXR-JPG -> phenotype or mortality cohort",
              _mimic_arguments, _run_mimic),
    "adni": ("clinfuse.pipeline.stages.etl_adni", "ADNIMERGE + T1 MRI -> AD/MCI/CN cohort", _adni_arguments, _run_adni),
}


def _available():
    for name, (module, help_text, arguments, run) in _DATASETS.items():
        try:
            yield name, importlib.import_module(module), help_text, arguments, run
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="<dataset>", required=True)
    for name, stage, help_text, arguments, run in _available():
        p = sub.add_parser(name, help=help_text, description=stage.__doc__)
        arguments(p, stage)
        p.set_defaults(_etl_run=functools.partial(run, stage=stage))


def run(args) -> int:
    return args._etl_run(args)
