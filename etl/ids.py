"""Identifiers read from text exactly: whole numbers that fit in int64, never rounded or overflowed.

An id read through a float loses digits (20 nines become 1e20, then a garbage int64) and a
fractional id is truncated (RID 2.5 becomes 2, and joins subject 2's rows). So an id column is
accepted only when every value is a plain whole number in text ("123", or "123.0" as spreadsheet
exports write it) between 0 and 2**63 - 1; anything else is an InputError naming the file, the
line or row and the column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clinfuse.etl.errors import InputError

INT64_MAX = str(np.iinfo(np.int64).max)  # 9223372036854775807, 19 digits
_WHOLE = r"^\+?0*(\d+)(?:\.0*)?$"


def invalid_ids(text: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(`[N]` bool: the value is not a whole number in int64, the digits of each valid value as text)."""
    digits = pd.Series(text.to_numpy(dtype=object), dtype=object).str.strip().str.extract(_WHOLE, expand=False)
    width = digits.str.len().fillna(0).to_numpy()
    bad = digits.isna().to_numpy() | (width > len(INT64_MAX))
    at_limit = np.flatnonzero(width == len(INT64_MAX))  # 19 digits: compare as text, a float would round
    bad[at_limit] |= digits.iloc[at_limit].to_numpy(dtype=object) > INT64_MAX
    return bad, digits


def parse_ids(text: pd.Series, where: str, column: str, row_word: str = "line", first_row: int = 2) -> np.ndarray:
    """`[N]` int64 from id text; raises InputError on the first value that is not a whole number in int64.

    Args:
        text: the column as read with `dtype=str` (missing values are NaN).
        where: the file named in errors.
        row_word: "line" or "row" (the word the file's other errors use).
        first_row: the number of the first data row (2 when the header is line 1).
    """
    bad, digits = invalid_ids(text)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = text.iloc[i]
        empty = pd.isna(value) or not str(value).strip()
        why = ("is empty; expected a whole-number id" if empty else
               "is too large for a 64-bit id" if not pd.isna(digits.iloc[i]) else "is not a whole-number id")
        raise InputError(f"{where}: {row_word} {i + first_row}, column {column}: "
                         f"{'' if empty else str(value)!r} {why}")
    return digits.to_numpy(dtype=object).astype(np.int64)
