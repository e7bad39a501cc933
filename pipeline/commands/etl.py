"""Turn raw exports into a processed cohort folder (docs/cohort-format.md).

  clinfuse etl mimic --mimic-iv DIR --mimic-cxr DIR --task phenotype|mortality --out DIR
  clinfuse etl adni  --adni DIR --out DIR

Paths default to params.yaml; the output folder is replaced atomically only
when the stage finishes.
"""

from __future__ import annotations

import importlib

NAME = "etl"
HELP = "build a processed cohort from raw MIMIC-IV/MIMIC-CXR or ADNI exports"

# Each dataset's stage module provides add_arguments(parser) and run(args).
_DATASETS = {
    "mimic": ("pipeline.stages.etl_mimic", "MIMIC-IV + MIMIC-CXR-JPG -> phenotype or mortality cohort"),
    "adni": ("pipeline.stages.etl_adni", "ADNIMERGE + T1 MRI -> AD/MCI/CN cohort"),
}


def _available():
    for name, (module, help_text) in _DATASETS.items():
        try:
            yield name, importlib.import_module(module), help_text
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="<dataset>", required=True)
    for name, module, help_text in _available():
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_etl_run=module.run)


def run(args) -> int:
    return args._etl_run(args)
