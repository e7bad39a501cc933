import pandas as pd
import pytest

from clinfuse.etl.split import assign_patient_split
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings

SPLIT = (0.7, 0.1, 0.2)


def test_split_has_no_subject_in_two_parts():
    ids = pd.Series([1, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 10])
    split = assign_patient_split(ids, SPLIT, seed=7)
    parts_per_subject = pd.DataFrame({"id": ids, "split": split}).groupby("id")["split"].nunique()
    assert (parts_per_subject == 1).all()


def test_the_default_split_is_seven_one_two_by_patient():
    ids = pd.Series(range(100)).repeat(3)
    settings = MimicEtlSettings()
    split = assign_patient_split(ids, settings.split, settings.split_seed)
    per_patient = pd.DataFrame({"id": ids.values, "split": split.values}).drop_duplicates("id")
    assert per_patient["split"].value_counts().to_dict() == {"train": 70, "test": 20, "val": 10}


def test_split_is_deterministic_and_independent_of_row_order():
    ids = pd.Series([5, 3, 9, 1, 7, 2, 8, 4, 6, 10])
    a = dict(zip(ids, assign_patient_split(ids, SPLIT, seed=3), strict=True))
    shuffled = ids.sample(frac=1, random_state=0).reset_index(drop=True)
    b = dict(zip(shuffled, assign_patient_split(shuffled, SPLIT, seed=3), strict=True))
    assert a == b
    c = dict(zip(ids, assign_patient_split(ids, SPLIT, seed=4), strict=True))
    assert a != c


def test_split_rejects_fractions_not_summing_to_one():
    with pytest.raises(ValueError, match="sum"):
        assign_patient_split([1, 2, 3], fractions=(0.5, 0.1, 0.1), seed=0)


@pytest.mark.parametrize("fractions", [(1.2, -0.1, -0.1), (0.5, 0.5), (0.7, 0.1, 0.1, 0.1)])
def test_split_rejects_negative_fractions_and_other_than_three(fractions):
    with pytest.raises(ValueError, match=r"^split fractions must be three non-negative numbers summing to 1, got \("):
        assign_patient_split([1, 2, 3], fractions=fractions, seed=0)


def test_a_zero_fraction_leaves_that_part_empty():
    split = assign_patient_split(list(range(10)), fractions=(0.8, 0.0, 0.2), seed=0)
    assert split.value_counts().to_dict() == {"train": 8, "test": 2}


def test_parts_are_cut_at_the_rounded_cumulative_fractions():
    # 10 patients, (0.34, 0.33, 0.33): train round(3.4) = 3, val round(6.7) - 3 = 4, test the other 3
    # (rounding each part on its own would give 3 / 3 / 4)
    split = assign_patient_split(list(range(10)), fractions=(0.34, 0.33, 0.33), seed=0)
    assert split.value_counts().to_dict() == {"val": 4, "train": 3, "test": 3}
    assert split.name == "split"

