"""Build etl/resources/phenotypes_icd.csv.gz (and its rule counts) from the public code lists.

    python etl/resources/build_phenotype_resource.py /path/to/reference etl/resources/phenotypes_icd.csv.gz

Inputs (in the reference folder):
  hcup_ccs_2015_definitions.yaml  AHRQ HCUP CCS single-level groups (ICD-9-CM, no dots), as packaged
                                  by the mimic3-benchmarks project (MIT licence)
  icd10_to_icd9_gem_2018.txt      CMS 2018 GEM, ICD-10-CM -> ICD-9-CM (backward; public domain)
  icd9_to_icd10_gem_2018.txt      CMS 2018 GEM, ICD-9-CM -> ICD-10-CM (forward; public domain)

Output: one row per (phenotype, icd_version, icd_code) for the 25 groups with
use_in_benchmark True, and beside it `<name>.rules.json`, how many ICD-10 codes fell
under each rule below (the MIMIC stage copies it into its manifest).

ICD-9 codes are the CCS lists. Every ICD-10 code gets the CCS groups (all 283, not only
the 25) decided by this rule, and keeps the benchmark ones:

1. The backward GEM decides wherever it has an entry for the code (rows flagged "no map"
   are ignored). The GEM was written from the ICD-10 side, so it is the file that says
   what an ICD-10 code means; the forward GEM maps ICD-9 codes to their nearest ICD-10
   neighbour and would otherwise pull e.g. I10 into the group of ICD-9 4010 (malignant
   hypertension) as well.
2. Alternatives vote. The GEM's rows for one code (one per alternative ICD-9 target) go
   to the CCS group most of the distinct targets fall in: I10 -> {4010, 4011, 4019} is
   "Essential hypertension" (2 of 3), not "Hypertension with complications" (1 of 3).
   A tie labels every tied group: the GEM gives no ground to prefer one, and dropping
   both would lose a true label (rule "backward_tie" in the counts).
3. Combinations label every group. Rows flagged "combination" say the ICD-10 code needs
   several ICD-9 codes together (one per choice list of a scenario): each choice list is
   one component, decided by rule 2 among its own alternatives, and the code gets the
   groups of all components of all scenarios (R6521 septic shock = 99592 severe sepsis +
   78552 septic shock -> "Septicemia" and "Shock"). Plain rows of a code that also has
   combination rows count as one more component.
4. The forward GEM only fills codes the backward GEM has no entry for; the ICD-9 codes
   mapping to such a code vote as in rule 2.

Rule names in the counts: backward_single (all targets in one group), backward_majority,
backward_tie, backward_combination, forward_only.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import yaml

RULES = ("backward_single", "backward_majority", "backward_tie", "backward_combination", "forward_only")


def read_gem(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{source: [(target, flags), ...]} in file order, without "no map" rows."""
    rows: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        source, target, flags = parts[0].upper(), parts[1].upper(), parts[2]
        if flags[1] == "1" or target == "NODX":  # no-map flag
            continue
        rows[source].append((target, flags))
    return rows


def vote(icd9_codes, group_of: dict[str, str]) -> tuple[set[str], bool]:
    """The CCS group(s) most of the distinct ICD-9 codes fall in, and whether it was a tie."""
    counts = Counter(group_of.get(c) for c in dict.fromkeys(icd9_codes))
    top = max(counts.values())
    winners = {g for g, k in counts.items() if k == top}
    return {g for g in winners if g is not None}, len(winners) > 1


def icd10_groups(backward, forward, group_of) -> dict[str, tuple[str, set[str]]]:
    """{icd10: (rule, CCS groups)} for every ICD-10 code in either GEM."""
    out = {}
    for code, rows in backward.items():
        components: dict[str, list[str]] = defaultdict(list)
        for target, flags in rows:
            # combination rows: one component per (scenario, choice list); plain rows form one more
            components[flags[3:5] if flags[2] == "1" else "plain"].append(target)
        votes = [vote(targets, group_of) for targets in components.values()]
        groups = set().union(*(g for g, _ in votes))
        if len(components) > 1 or "plain" not in components:
            rule = "backward_combination"
        elif votes[0][1]:
            rule = "backward_tie"
        else:
            rule = "backward_single" if len({group_of.get(t) for t, _ in rows}) == 1 else "backward_majority"
        out[code] = (rule, groups)
    sources: dict[str, list[str]] = defaultdict(list)
    for icd9, rows in forward.items():
        for icd10, _ in rows:
            sources[icd10].append(icd9)
    for code, icd9 in sources.items():
        if code not in out:
            out[code] = ("forward_only", vote(icd9, group_of)[0])
    return out


def build(reference: Path) -> tuple[list[tuple[str, int, str]], dict]:
    """Resource rows (group order of the CCS file, codes sorted) and the per-rule counts."""
    definitions = yaml.safe_load((reference / "hcup_ccs_2015_definitions.yaml").read_text())
    group_of = {c.strip().upper(): name for name, d in definitions.items() for c in d["codes"]}
    benchmark = [name for name, d in definitions.items() if d["use_in_benchmark"]]
    assigned = icd10_groups(read_gem(reference / "icd10_to_icd9_gem_2018.txt"),
                            read_gem(reference / "icd9_to_icd10_gem_2018.txt"), group_of)
    rows = []
    for name in benchmark:
        icd9 = sorted(c.strip().upper() for c in definitions[name]["codes"])
        icd10 = sorted(code for code, (_, groups) in assigned.items() if name in groups)
        rows += [(name, 9, c) for c in icd9] + [(name, 10, c) for c in icd10]
    counts = {rule: {"icd10_codes": 0, "with_benchmark_phenotype": 0} for rule in RULES}
    for rule, groups in assigned.values():
        counts[rule]["icd10_codes"] += 1
        counts[rule]["with_benchmark_phenotype"] += bool(groups & set(benchmark))
    return rows, counts


def build_rows(reference: Path) -> list[tuple[str, int, str]]:
    return build(reference)[0]


def rules_path(resource: Path) -> Path:
    """Where the per-rule counts of a resource live: `phenotypes_icd.csv.gz` -> `phenotypes_icd.rules.json`."""
    return resource.with_name(resource.name.split(".")[0] + ".rules.json")


def write_resource(rows, out: Path, counts: dict | None = None) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        text = [
            "# CCS benchmark phenotypes -> ICD-9-CM and ICD-10-CM codes (no dots).",
            "# AHRQ HCUP Clinical Classifications Software 2015 (public tool), as packaged by",
            "# mimic3-benchmarks (MIT licence); ICD-10 via CMS 2018 GEMs (public domain):",
            "# backward GEM first, majority vote among alternatives, every group of a combination,",
            "# forward GEM only for codes without a backward entry.",
            "# Built by etl/resources/build_phenotype_resource.py.",
        ]
        gz.write(("\n".join(text) + "\n").encode())
        lines = []
        writer = csv.writer(_Lines(lines), lineterminator="\n")
        writer.writerow(["phenotype", "icd_version", "icd_code"])
        writer.writerows(rows)
        gz.write("".join(lines).encode())
    if counts is not None:
        rules_path(out).write_text(json.dumps(counts, indent=1) + "\n")


class _Lines:
    def __init__(self, sink):
        self.sink = sink

    def write(self, s):
        self.sink.append(s)


if __name__ == "__main__":
    rows, counts = build(Path(sys.argv[1]))
    write_resource(rows, Path(sys.argv[2]), counts)
