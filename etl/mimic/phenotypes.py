"""The 25 CCS benchmark phenotypes from an admission's diagnoses_icd rows.

ICD-9 codes match the CCS lists directly; ICD-10 codes match through the CMS
GEMs, backward GEM first with a majority vote among alternative targets (the rule is
in resources/build_phenotype_resource.py; `RULE_COUNTS` says how many ICD-10 codes
fell under each of its rules). A code is matched together with its `icd_version`,
never as a bare string across versions.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

RESOURCE = Path(__file__).resolve().parents[1] / "resources" / "phenotypes_icd.csv.gz"
RULE_COUNTS = RESOURCE.with_name("phenotypes_icd.rules.json")


@dataclass(frozen=True)
class PhenotypeDefinitions:
    names: list[str]  # 25, resource order (CCS file order)
    codes: pd.DataFrame  # phenotype, icd_version, icd_code


def load_phenotype_definitions(path: Path = RESOURCE) -> PhenotypeDefinitions:
    with gzip.open(path, "rt") as fh:
        codes = pd.read_csv(fh, comment="#", dtype={"icd_code": str, "icd_version": int})
    names = list(dict.fromkeys(codes["phenotype"]))
    return PhenotypeDefinitions(names, codes)


def load_rule_counts(path: Path = RULE_COUNTS) -> dict[str, dict[str, int]]:
    """How many ICD-10 codes each mapping rule decided, as shipped beside the resource (for the manifest)."""
    return json.loads(path.read_text())


def normalise_codes(codes: pd.Series) -> pd.Series:
    """Text codes without dots or spaces, upper case; leading zeros kept."""
    return codes.astype(str).str.strip().str.replace(".", "", regex=False).str.upper()


def assign_phenotypes(diagnoses: pd.DataFrame, definitions: PhenotypeDefinitions) -> pd.DataFrame:
    """One row per hadm_id in `diagnoses`: hadm_id + 25 int8 phenotype columns.

    Admissions with no diagnosis rows are absent from the result (no codes is not evidence of
    no phenotype); the MIMIC stage excludes them and counts them in the manifest.
    """
    dx = diagnoses[["hadm_id", "icd_code", "icd_version"]].copy()
    dx["icd_code"] = normalise_codes(dx["icd_code"])
    dx["icd_version"] = pd.to_numeric(dx["icd_version"], errors="coerce")
    hits = dx.merge(definitions.codes, on=["icd_version", "icd_code"], how="inner")
    table = pd.crosstab(hits["hadm_id"], hits["phenotype"]).clip(upper=1)
    out = pd.DataFrame({"hadm_id": np.sort(dx["hadm_id"].unique())})
    table = table.reindex(index=out["hadm_id"], columns=definitions.names, fill_value=0).fillna(0)
    for name in definitions.names:
        out[name] = table[name].to_numpy().astype(np.int8)
    return out


PHENOTYPE_NAMES = load_phenotype_definitions().names
