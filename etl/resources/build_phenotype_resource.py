"""Build etl/resources/phenotypes_icd.csv.gz from the public code lists.

    python etl/resources/build_phenotype_resource.py /path/to/reference etl/resources/phenotypes_icd.csv.gz

Inputs (in the reference folder):
  hcup_ccs_2015_definitions.yaml  AHRQ HCUP CCS single-level groups (ICD-9-CM, no dots), as packaged
                                  by the mimic3-benchmarks project (MIT licence)
  icd10_to_icd9_gem_2018.txt      CMS 2018 GEM, ICD-10-CM -> ICD-9-CM (public domain)
  icd9_to_icd10_gem_2018.txt      CMS 2018 GEM, ICD-9-CM -> ICD-10-CM (public domain)

Output: one row per (phenotype, icd_version, icd_code) for the 25 groups with
use_in_benchmark True. ICD-9 codes are the CCS lists. An ICD-10 code belongs to a
group if the backward GEM maps it to one of the group's ICD-9 codes, or the forward
GEM maps one of the group's ICD-9 codes to it (the union of both directions, so a
code is found whichever file lists the pair). GEM rows flagged "no map" are skipped.
"""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

import yaml


def read_gem(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        source, target, flags = parts[0], parts[1], parts[2]
        if flags[1] == "1" or target == "NoDx":  # no-map flag
            continue
        pairs.append((source.upper(), target.upper()))
    return pairs


def build_rows(reference: Path) -> list[tuple[str, int, str]]:
    definitions = yaml.safe_load((reference / "hcup_ccs_2015_definitions.yaml").read_text())
    groups = {name: {c.strip().upper() for c in d["codes"]} for name, d in definitions.items() if d["use_in_benchmark"]}
    backward = read_gem(reference / "icd10_to_icd9_gem_2018.txt")  # (icd10, icd9)
    forward = read_gem(reference / "icd9_to_icd10_gem_2018.txt")  # (icd9, icd10)
    rows = []
    for name, icd9 in groups.items():
        icd10 = {i10 for i10, i9 in backward if i9 in icd9} | {i10 for i9, i10 in forward if i9 in icd9}
        rows += [(name, 9, c) for c in sorted(icd9)] + [(name, 10, c) for c in sorted(icd10)]
    return rows


def write_resource(rows, out: Path) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        text = [
            "# CCS benchmark phenotypes -> ICD-9-CM and ICD-10-CM codes (no dots).",
            "# AHRQ HCUP Clinical Classifications Software 2015 (public tool), as packaged by",
            "# mimic3-benchmarks (MIT licence); ICD-10 via CMS 2018 GEMs (public domain).",
            "# Built by etl/resources/build_phenotype_resource.py.",
        ]
        gz.write(("\n".join(text) + "\n").encode())
        lines = []
        writer = csv.writer(_Lines(lines), lineterminator="\n")
        writer.writerow(["phenotype", "icd_version", "icd_code"])
        writer.writerows(rows)
        gz.write("".join(lines).encode())


class _Lines:
    def __init__(self, sink):
        self.sink = sink

    def write(self, s):
        self.sink.append(s)


if __name__ == "__main__":
    write_resource(build_rows(Path(sys.argv[1])), Path(sys.argv[2]))
