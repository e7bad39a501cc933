"""ADNI tabular features by hand (etl/adni/tabular.py).

Three training rows and one test row. AGE 60, 70, missing (test 99): mean 65, population std 5,
missing rate 1/3. ABETA ">1700", 1500, missing (test "<200"): mean 1600, std 100, censored flags
1, 0, 0, 1. FDG 1.0, 1.5, missing (test 2.0): mean 1.25, std 0.25. MOCA 25 three times: std 0
-> 1. PIB is missing in 2 of 3 training rows -> dropped above max_missing 0.5, recorded as 0.6667.
PTGENDER: training categories Female and Male (stripped; empty is no category; the test row's
"Other" gets no column). MMSE is excluded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.adni.tabular import fit_transform_tabular, parse_censored

TRAIN = np.array([True, True, True, False])


def _base() -> pd.DataFrame:
    return pd.DataFrame({
        "RID": ["1", "2", "3", "4"],
        "AGE": ["60", "70", None, "99"],
        "ABETA": [">1700", "1500", None, "<200"],
        "FDG": ["1.0", "1.5", "", "2.0"],
        "PIB": [None, "5", None, "7"],
        "MMSE": ["30", "29", "28", "27"],
        "MOCA": ["25", "25", "25", "30"],
        "PTGENDER": ["Male", " Female ", None, "Other"],
    })


def test_censored_assay_text_becomes_its_bound_and_a_flag():
    number, flag = parse_censored(pd.Series([">1700", " <8 ", "812.5", "> 90", "abc", None, "1<2", "X12"]))
    np.testing.assert_array_equal(number.to_numpy(), [1700.0, 8.0, 812.5, 90.0, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(flag.to_numpy(), [1, 1, 0, 1, 0, 0, 0, 0])
    assert number.dtype == np.float64 and flag.dtype == np.float32


def test_censored_parse_of_whole_numbers_is_float():
    number, flag = parse_censored(pd.Series(["3", "<4"]))
    assert number.dtype == np.float64 and number.tolist() == [3.0, 4.0] and flag.tolist() == [0.0, 1.0]


def test_features_and_statistics_come_from_training_rows_by_hand():
    matrix, names, stats = fit_transform_tabular(_base(), TRAIN, exclude=["MMSE"], max_missing=0.5)
    assert names == ["AGE", "AGE_missing", "ABETA", "ABETA_missing", "ABETA_censored", "FDG", "FDG_missing",
                     "MOCA", "MOCA_missing", "PTGENDER=Female", "PTGENDER=Male"]
    assert stats == {
        "dropped_missing": {"PIB": 0.6667},
        "numeric": {"AGE": {"mean": 65.0, "std": 5.0, "missing_rate": pytest.approx(1 / 3)},
                    "ABETA": {"mean": 1600.0, "std": 100.0, "missing_rate": pytest.approx(1 / 3)},
                    "FDG": {"mean": 1.25, "std": 0.25, "missing_rate": pytest.approx(1 / 3)},
                    "MOCA": {"mean": 25.0, "std": 1.0, "missing_rate": 0.0}},
        "categories": {"PTGENDER": ["Female", "Male"]}}
    expected = np.array([
        # AGE  miss  ABETA miss cens  FDG  miss MOCA miss  F  M
        [-1.0, 0, 1.0, 0, 1, -1.0, 0, 0.0, 0, 0, 1],
        [1.0, 0, -1.0, 0, 0, 1.0, 0, 0.0, 0, 1, 0],
        [0.0, 1, 0.0, 1, 0, 0.0, 1, 0.0, 0, 0, 0],
        [6.8, 0, -14.0, 0, 1, 3.0, 0, 5.0, 0, 0, 0]])
    assert matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, expected, rtol=1e-6)


def test_a_missing_rate_at_the_limit_keeps_the_column():
    # one of two training rows missing: rate 0.5 is not above max_missing 0.5
    base = pd.DataFrame({"AGE": ["60", None, "80"]})
    _, names, stats = fit_transform_tabular(base, np.array([True, True, False]), exclude=[], max_missing=0.5)
    assert names == ["AGE", "AGE_missing"] and stats["numeric"]["AGE"]["missing_rate"] == 0.5
    _, names, stats = fit_transform_tabular(base, np.array([True, True, False]), exclude=[], max_missing=0.49)
    assert names == [] and stats["dropped_missing"] == {"AGE": 0.5}


def test_without_training_rows_every_numeric_column_counts_as_all_missing():
    matrix, names, stats = fit_transform_tabular(_base(), np.zeros(4, bool), exclude=[], max_missing=0.5)
    assert stats["dropped_missing"] == dict.fromkeys(["AGE", "ABETA", "FDG", "PIB", "MMSE", "MOCA"], 1.0)
    assert stats["categories"] == {"PTGENDER": []} and names == []
    assert matrix.shape == (4, 0) and matrix.dtype == np.float32


def test_a_column_with_no_or_one_training_value_gets_mean_0_or_that_value_and_std_1():
    base = pd.DataFrame({"AGE": ["60", None, None, "99"], "PIB": [None, None, None, "7"]})
    matrix, names, stats = fit_transform_tabular(base, TRAIN, exclude=[], max_missing=1.0)
    assert stats["numeric"] == {"AGE": {"mean": 60.0, "std": 1.0, "missing_rate": pytest.approx(2 / 3)},
                                "PIB": {"mean": 0.0, "std": 1.0, "missing_rate": 1.0}}
    assert names == ["AGE", "AGE_missing", "PIB", "PIB_missing"]
    np.testing.assert_array_equal(matrix, [[0, 0, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1], [39, 0, 7, 0]])


def test_a_standard_deviation_of_1e_8_counts_as_constant():
    # 0 and 2e-8: mean 1e-8, population std exactly 1e-8, which is not above the 1e-8 floor -> std 1
    base = pd.DataFrame({"FDG": ["0", "0.00000002", "1"]})
    matrix, _, stats = fit_transform_tabular(base, np.array([True, True, False]), exclude=[], max_missing=0.5)
    assert stats["numeric"]["FDG"] == {"mean": 1e-8, "std": 1.0, "missing_rate": 0.0}
    np.testing.assert_allclose(matrix[:, 0], [-1e-8, 1e-8, 1 - 1e-8])
