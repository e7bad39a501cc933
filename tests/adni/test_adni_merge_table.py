"""ADNIMERGE checks by hand (etl/adni/merge_table.py): each bad value is an InputError naming the
file, the row (header = row 1) and the column; blanks are allowed; exact repeats are dropped and counted."""

from __future__ import annotations

import pandas as pd
import pytest

from clinfuse.etl.adni.merge_table import validate_adnimerge
from clinfuse.etl.errors import InputError


def _table(**columns) -> pd.DataFrame:
    base = {"RID": ["1", "2", "3"], "VISCODE": ["bl", "bl", "m06"], "EXAMDATE": ["2010-01-10", "2010-02-01", None],
            "AGE": ["70", "75", "80"], "IMAGEUID": ["1001", None, "3001"], "DX": ["CN", "MCI", "MCI"]}
    return pd.DataFrame({**base, **columns}, dtype=object)


def test_a_header_without_rows_is_an_error_naming_the_file():
    with pytest.raises(InputError, match=r"^A\.csv: has a header but no visit rows$"):
        validate_adnimerge(_table().iloc[:0], "A.csv")


def test_blank_and_boundary_values_are_accepted_and_nothing_is_dropped():
    table = _table(AGE=["0", " ", "120"], IMAGEUID=[" 1001 ", " ", None], EXAMDATE=[" 2010-01-10", " ", None])
    kept, dropped = validate_adnimerge(table, "A.csv")
    assert dropped == 0 and kept.equals(table)


def test_dates_in_more_than_one_format_are_all_read():
    table = _table(EXAMDATE=["2010-01-10", "02/01/2010", "2010-03-01 00:00:00"])
    assert validate_adnimerge(table, "A.csv")[1] == 0


@pytest.mark.parametrize(("column", "values", "message"), [
    ("AGE", [None, "70", "121"], "row 4, column AGE: '121' is not an age in years (0-120)"),
    ("AGE", [None, "-1", "70"], "row 3, column AGE: '-1' is not an age in years (0-120)"),
    ("AGE", [None, "70", "old"], "row 4, column AGE: 'old' is not an age in years (0-120)"),
    ("IMAGEUID", [None, "1001", "I3001"], "row 4, column IMAGEUID: 'I3001' is not an image id "
                                          "(a whole number in 64 bits)"),
    ("EXAMDATE", [None, "2010-01-10", "2010-13-45"], "row 4, column EXAMDATE: '2010-13-45' is not a date "
                                                     "(expected YYYY-MM-DD)"),
])
def test_a_bad_value_names_file_row_and_column_counting_the_header(column, values, message):
    with pytest.raises(InputError) as err:
        validate_adnimerge(_table(**{column: values}), "A.csv")
    assert str(err.value) == f"A.csv: {message}"


def test_exact_repeats_are_dropped_and_counted_and_the_index_restarts():
    table = pd.concat([_table(), _table().iloc[[0, 2, 0]]], ignore_index=True)
    kept, dropped = validate_adnimerge(table, "A.csv")
    assert dropped == 3 and isinstance(dropped, int)
    assert kept.equals(_table())


def test_two_different_baseline_rows_name_both_rows_and_the_first_four_differing_columns():
    second = pd.DataFrame({"RID": ["1"], "VISCODE": [" bl "], "EXAMDATE": ["2010-01-11"], "AGE": ["71"],
                           "IMAGEUID": ["1002"], "DX": ["MCI"]}, dtype=object)
    table = pd.concat([_table(), second], ignore_index=True)
    with pytest.raises(InputError) as err:
        validate_adnimerge(table, "A.csv")
    assert str(err.value) == ("A.csv: rows 2 and 5: RID 1 has two different baseline rows "
                              "(they differ in VISCODE, EXAMDATE, AGE, IMAGEUID); remove the wrong one")


@pytest.mark.parametrize("dx", [[None, "CN", "MCI"], ["CN", None, "MCI"]], ids=["blank-first", "value-first"])
def test_baseline_rows_that_differ_only_where_both_are_blank_are_not_a_clash_but_blanks_differ_from_values(dx):
    table = _table(RID=["1", "1", "3"], VISCODE=["bl", "bl", "m06"], EXAMDATE=["2010-01-10"] * 3,
                   AGE=["70", "70", "80"], IMAGEUID=[None, None, "3001"], DX=dx)
    with pytest.raises(InputError) as err:
        validate_adnimerge(table, "A.csv")
    assert "rows 2 and 3: RID 1 has two different baseline rows (they differ in DX);" in str(err.value)
