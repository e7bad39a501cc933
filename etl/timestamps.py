"""Time stamps in MIMIC exports are naive local times; a time-zone suffix is refused, never converted.

MIMIC-IV stores every time as a shifted local wall-clock time without an offset. A value with
`+00:00`, `-05:00`, `Z` or `UTC` means the export went through a tool that attached a zone, and
converting it (to what zone?) would move stays against chartevents and films that carry none.
So the first such value is an InputError naming the file, the line and the column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clinfuse.etl.errors import InputError

# a clock time followed by an offset (+HH, +HHMM, +HH:MM), Z, or a zone name such as UTC / GMT
_ZONE = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?\s*(?:[+-]\d{2}(?::?\d{2})?|Z|UTC|GMT)\s*$"


def refuse_time_zones(text: pd.Series, where: str, column: str, row_word: str = "line", first_row: int = 2) -> None:
    """Raise InputError on the first value of `text` (read as text) that carries a time-zone suffix."""
    values = pd.Series(text.to_numpy(dtype=object), dtype=object)
    zoned = values.str.contains(_ZONE, case=False, regex=True, na=False).to_numpy(dtype=bool)
    if zoned.any():
        i = int(np.flatnonzero(zoned)[0])
        raise InputError(f"{where}: {row_word} {i + first_row}, column {column}: {values.iloc[i]!r} carries a time "
                         "zone; MIMIC times are naive local times (YYYY-MM-DD HH:MM:SS, no offset), so clinfuse "
                         "refuses zoned values rather than guess a conversion")
