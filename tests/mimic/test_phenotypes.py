"""CCS phenotypes from hand-written diagnosis rows, in both ICD versions."""

from __future__ import annotations

import gzip
import re

import pandas as pd
import pytest

from clinfuse.etl.mimic.phenotypes import (
    PHENOTYPE_NAMES,
    RESOURCE,
    PhenotypeDefinitions,
    assign_phenotypes,
    load_phenotype_definitions,
    load_rule_counts,
    normalise_codes,
)

SEPSIS = "Septicemia (except in labor)"
CHF = "Congestive heart failure; nonhypertensive"
ARF = "Acute and unspecified renal failure"
RESP = "Respiratory failure; insufficiency; arrest (adult)"
DM = "Diabetes mellitus without complication"
# The 25 groups with use_in_benchmark in the HCUP CCS 2015 definitions as packaged by mimic3-benchmarks,
# in that file's order (the order of the label columns in every MIMIC phenotype cohort).
BENCHMARK_GROUPS = [
    SEPSIS, DM, "Diabetes mellitus with complications", "Disorders of lipid metabolism",
    "Fluid and electrolyte disorders", "Essential hypertension",
    "Hypertension with complications and secondary hypertension", "Acute myocardial infarction",
    "Coronary atherosclerosis and other heart disease", "Conduction disorders", "Cardiac dysrhythmias", CHF,
    "Acute cerebrovascular disease",
    "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)",
    "Chronic obstructive pulmonary disease and bronchiectasis", "Pleurisy; pneumothorax; pulmonary collapse",
    RESP, "Other lower respiratory disease", "Other upper respiratory disease", "Other liver diseases",
    "Gastrointestinal hemorrhage", ARF, "Chronic kidney disease",
    "Complications of surgical procedures or medical care", "Shock",
]


def positives(rows):
    dx = pd.DataFrame(rows, columns=["hadm_id", "icd_code", "icd_version"])
    dx.insert(0, "subject_id", 1)
    out = assign_phenotypes(dx, load_phenotype_definitions()).set_index("hadm_id")
    return {h: sorted(c for c in PHENOTYPE_NAMES if out.loc[h, c] == 1) for h in out.index}


def test_there_are_25_benchmark_phenotypes():
    assert len(PHENOTYPE_NAMES) == 25 and SEPSIS in PHENOTYPE_NAMES and "Shock" in PHENOTYPE_NAMES


def test_phenotype_names_are_the_benchmark_groups_in_file_order():
    assert PHENOTYPE_NAMES == BENCHMARK_GROUPS


@pytest.mark.parametrize("group,icd9,icd10", [
    (SEPSIS, "0389", "A419"), (CHF, "4280", "I509"), (ARF, "5849", "N179"), (RESP, "51881", "J9600"),
    (DM, "25000", "E119"),
])
def test_known_codes_map_in_both_versions(group, icd9, icd10):
    got = positives([(1, icd9, 9), (2, icd10, 10)])
    assert group in got[1] and group in got[2]


def test_leading_zero_is_kept():
    assert positives([(1, "0389", 9)])[1] == [SEPSIS]
    assert positives([(1, "389", 9)])[1] == []  # "389" is another code (ear), not septicemia


def test_codes_never_match_across_versions():
    # "4280" is ICD-9 CHF; given as an ICD-10 code it is not a code at all and must not match
    assert positives([(1, "4280", 10), (2, "A419", 9)]) == {1: [], 2: []}


def test_a_code_string_valid_in_both_versions_matches_only_its_own_version():
    # "E030" is ICD-9 (unarmed fight, an E-code) and ICD-10 (congenital hypothyroidism): a real collision
    codes = pd.DataFrame({"phenotype": ["nine", "ten"], "icd_version": [9, 10], "icd_code": ["E030", "E030"]})
    dx = pd.DataFrame({"subject_id": 1, "hadm_id": [1, 2], "seq_num": 1, "icd_code": "E030", "icd_version": [9, 10]})
    out = assign_phenotypes(dx, PhenotypeDefinitions(["nine", "ten"], codes))
    assert out[["hadm_id", "nine", "ten"]].values.tolist() == [[1, 1, 0], [2, 0, 1]]
    assert (out.dtypes[["nine", "ten"]] == "int8").all()


def test_dotted_and_lowercase_codes_are_normalised():
    assert positives([(1, "428.0", 9), (2, "n17.9", 10)]) == {1: [CHF], 2: [ARF]}


def test_several_groups_per_admission_and_unrelated_codes_give_zeros():
    got = positives([(1, "0389", 9), (1, "4280", 9), (1, "V1582", 9), (2, "Z87891", 10)])
    assert got[1] == sorted([SEPSIS, CHF]) and got[2] == []


def test_icd10_heart_failure_code_maps_to_heart_failure():
    # I5020 (unspecified systolic heart failure) -> ICD-9 42820 in the backward GEM
    assert positives([(1, "I5020", 10)])[1] == [CHF]


def test_plain_essential_hypertension_is_essential_hypertension_only():
    # backward GEM: I10 -> 4010 (malignant, "with complications" group), 4011, 4019 (essential): 2 of 3 win
    assert positives([(1, "I10", 10)])[1] == ["Essential hypertension"]


def test_septic_shock_combination_labels_both_groups_of_the_combination():
    # backward GEM: R6521 = 99592 severe sepsis AND 78552 septic shock (combination flag)
    assert positives([(1, "R6521", 10)])[1] == sorted([SEPSIS, "Shock"])


def test_codes_with_one_backward_target_take_its_group_only():
    # J99 -> 5178 only (the forward GEM's 5173 -> J99 no longer adds respiratory failure);
    # R0689 -> 78499, 78609, 7869: two of three are lower-respiratory symptoms
    got = positives([(1, "J99", 10), (2, "R0689", 10)])
    assert got == {1: ["Other lower respiratory disease"], 2: ["Other lower respiratory disease"]}


def test_rule_counts_ship_beside_the_resource_and_cover_every_labelled_icd10_code():
    counts = load_rule_counts()
    assert set(counts) == {"backward_single", "backward_majority", "backward_tie", "backward_combination",
                           "forward_only"}
    labelled = load_phenotype_definitions().codes.query("icd_version == 10")["icd_code"].nunique()
    assert sum(c["with_benchmark_phenotype"] for c in counts.values()) == labelled
    assert all(c["with_benchmark_phenotype"] <= c["icd10_codes"] for c in counts.values())


def test_mapping_rule_on_a_hand_written_gem():
    from clinfuse.etl.resources.build_phenotype_resource import icd10_groups

    group_of = {"1": "A", "2": "A", "3": "B", "4": "C", "5": "D"}
    backward = {
        "X1": [("1", "10000"), ("2", "10000"), ("3", "10000")],  # A wins 2:1
        "X2": [("1", "10000"), ("3", "10000")],  # tie: both
        "X3": [("1", "10111"), ("3", "10111"), ("2", "10111"), ("4", "10112")],  # components {1,3,2}->A and {4}->C
        "X4": [("5", "00000")],
    }
    forward = {"1": [("X1", "10000"), ("Y1", "10000")], "3": [("Y1", "10000")], "4": [("Y1", "10000")],
               "5": [("X4", "00000")]}
    got = icd10_groups(backward, forward, group_of)
    assert got == {
        "X1": ("backward_majority", {"A"}), "X2": ("backward_tie", {"A", "B"}),
        "X3": ("backward_combination", {"A", "C"}), "X4": ("backward_single", {"D"}),
        # no backward entry: the forward GEM's sources 1 (A), 3 (B), 4 (C) tie three ways
        "Y1": ("forward_only", {"A", "B", "C"}),
    }


def test_shipped_resource_is_one_block_per_group_of_well_formed_codes_in_both_versions():
    with gzip.open(RESOURCE, "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0].startswith("#") and "phenotype,icd_version,icd_code" in lines
    codes = load_phenotype_definitions().codes
    # each group's rows are contiguous, in the label order
    blocks = codes["phenotype"].ne(codes["phenotype"].shift()).cumsum()
    assert codes.groupby(blocks)["phenotype"].first().tolist() == PHENOTYPE_NAMES
    assert not codes.duplicated().any()
    assert (normalise_codes(codes["icd_code"]) == codes["icd_code"]).all()  # no dots, upper case
    well_formed = {9: re.compile(r"(\d{3,5}|V\d{2,4}|E\d{3,4})"), 10: re.compile(r"[A-Z]\d[0-9A-Z]{1,5}")}
    bad = [(v, c) for v, c in zip(codes["icd_version"], codes["icd_code"], strict=True)
           if v not in well_formed or not well_formed[v].fullmatch(c)]
    assert bad == []
    versions = codes.groupby("phenotype")["icd_version"].agg(set)
    assert all(versions[name] == {9, 10} for name in PHENOTYPE_NAMES)


def test_versions_given_as_text_match_and_an_unreadable_version_matches_nothing():
    # diagnoses_icd read as text: "9" and "10" are the numbers 9 and 10; "ICD9" is no version
    dx = pd.DataFrame({"hadm_id": [1, 2, 3], "icd_code": ["0389", "N179", "0389"], "icd_version": ["9", "10", "ICD9"]})
    out = assign_phenotypes(dx, load_phenotype_definitions()).set_index("hadm_id")
    assert out.loc[1, SEPSIS] == 1 and out.loc[2, ARF] == 1
    assert out.loc[3].sum() == 0  # still one row: its codes are there, none matched


def test_two_codes_of_one_group_give_a_1_not_a_count():
    # 0389 (unspecified septicemia) and 0380 (streptococcal septicemia) are both Septicemia
    dx = pd.DataFrame({"hadm_id": [1, 1], "icd_code": ["0389", "0380"], "icd_version": [9, 9]})
    assert assign_phenotypes(dx, load_phenotype_definitions()).set_index("hadm_id").loc[1, SEPSIS] == 1


def test_a_resource_of_numeric_looking_codes_keeps_them_as_text(tmp_path):
    path = tmp_path / "codes.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("# a comment line\nphenotype,icd_version,icd_code\nsepsis,9,0389\nsepsis,9,0380\nkidney,9,5849\n")
    d = load_phenotype_definitions(path)
    assert d.names == ["sepsis", "kidney"]
    assert d.codes["icd_code"].tolist() == ["0389", "0380", "5849"] and d.codes["icd_version"].tolist() == [9, 9, 9]
    dx = pd.DataFrame({"hadm_id": [7], "icd_code": ["038.9"], "icd_version": [9]})
    assert assign_phenotypes(dx, d)[["sepsis", "kidney"]].values.tolist() == [[1, 0]]
