"""Check an ADNIMERGE table before anything is derived from it.

Nothing is coerced silently: a value that cannot be what its column holds is an
InputError naming the row (header = row 1) and column; rows repeated exactly are
dropped and counted; two different baseline rows for one subject are an error,
since which diagnosis and scan are right is not ours to guess.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clinfuse.etl.errors import InputError
from clinfuse.etl.ids import invalid_ids

MAX_PLAUSIBLE_AGE = 120


def validate_adnimerge(table: pd.DataFrame, source: str) -> tuple[pd.DataFrame, int]:
    """(the table without exact duplicate rows, how many were dropped); raises InputError on bad values.

    Args:
        table: ADNIMERGE read with every column as text (`dtype=str`).
        source: the file name used in errors.
    """
    if table.empty:
        raise InputError(f"{source}: has a header but no visit rows")
    for column in ("AGE",):
        text = table[column].dropna().str.strip()
        value = pd.to_numeric(text, errors="coerce")
        bad = value.isna() & (text != "") | (value < 0) | (value > MAX_PLAUSIBLE_AGE)
        if bad.any():
            i = int(bad.index[np.flatnonzero(bad.to_numpy())[0]])
            raise InputError(f"{source}: row {i + 2}, column {column}: {table.at[i, column]!r} is not an age "
                             f"in years (0-{MAX_PLAUSIBLE_AGE})")
    text = table["IMAGEUID"].dropna().str.strip()
    text = text[text != ""]
    bad = invalid_ids(text)[0]  # exactly: 1e30 or 20 digits would name another (or no) scan file
    if bad.any():
        i = int(text.index[np.flatnonzero(bad)[0]])
        raise InputError(f"{source}: row {i + 2}, column IMAGEUID: {table.at[i, 'IMAGEUID']!r} is not an image id "
                         "(a whole number in 64 bits)")
    text = table["EXAMDATE"].dropna().str.strip()
    parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    bad = parsed.isna() & (text != "")
    if bad.any():
        i = int(bad.index[np.flatnonzero(bad.to_numpy())[0]])
        raise InputError(f"{source}: row {i + 2}, column EXAMDATE: {table.at[i, 'EXAMDATE']!r} is not a date "
                         "(expected YYYY-MM-DD)")
    exact = table.duplicated(keep="first")
    kept = table[~exact]
    baseline = kept[kept["VISCODE"].astype(str).str.strip() == "bl"]
    clash = baseline["RID"].duplicated(keep=False)
    if clash.any():
        rows = baseline.index[clash.to_numpy()][:2]
        a, b = kept.loc[rows[0]], kept.loc[rows[1]]
        differ = [c for c in kept.columns if a[c] != b[c] and not (pd.isna(a[c]) and pd.isna(b[c]))]
        raise InputError(f"{source}: rows {rows[0] + 2} and {rows[1] + 2}: RID {a['RID']} has two different baseline "
                         f"rows (they differ in {', '.join(differ[:4])}); remove the wrong one")
    return kept.reset_index(drop=True), int(exact.sum())
