"""Read the small MIMIC-IV tables (patients, admissions, icustays) strictly.

Real exports get copied, concatenated and re-encoded on the way to an analyst:
rows appear twice, ids pick up a decimal, a date column holds text. Nothing here
is silently rounded, coerced or dropped:
  - a file that is not valid (gzip) CSV or not UTF-8 is an InputError naming it;
  - an id that is not a whole number in int64 (etl/ids.py), a time with a time-zone
    suffix (etl/timestamps.py), or a required time that does not parse, is an InputError
    naming the file, the line and the column;
  - rows repeated exactly are dropped and counted (`duplicates` in the manifest);
  - two different rows for one key (a stay_id, hadm_id or subject_id) are an
    InputError naming both lines: which one is right is not ours to guess.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.etl.errors import InputError, not_utf8
from clinfuse.etl.ids import parse_ids
from clinfuse.etl.timestamps import refuse_time_zones


@dataclass(frozen=True)
class TableSpec:
    """The columns the ETL reads from one table and how each must parse."""

    name: str
    columns: list[str]
    key: str
    ids: list[str]
    times: list[str] = field(default_factory=list)  # must parse when present
    required_times: list[str] = field(default_factory=list)  # must be present too
    numbers: list[str] = field(default_factory=list)


TABLES = {
    "hosp/patients": TableSpec("hosp/patients", ["subject_id", "gender", "anchor_age", "anchor_year", "dod"],
                               key="subject_id", ids=["subject_id"], times=["dod"],
                               numbers=["anchor_age", "anchor_year"]),
    "hosp/admissions": TableSpec("hosp/admissions",
                                 ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "race"],
                                 key="hadm_id", ids=["subject_id", "hadm_id"],
                                 times=["admittime", "dischtime", "deathtime"],
                                 required_times=["admittime", "dischtime"]),
    "icu/icustays": TableSpec("icu/icustays", ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit",
                                               "intime", "outtime"],
                              key="stay_id", ids=["subject_id", "hadm_id", "stay_id"], times=["intime", "outtime"],
                              required_times=["intime"]),
}


def _read_text_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:  # utf-8-sig: a byte-order mark (Excel, some Windows tools) is not part of the first column's name
        return pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False, na_values=[""],
                           encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, "MIMIC-IV") from None
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputError(f"{path}: cannot be read as {'gzip ' if path.suffix == '.gz' else ''}CSV "
                         f"(truncated or corrupt: {exc})") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"{path}: malformed CSV ({str(exc).splitlines()[0]})") from None


def _first_bad(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0])


def read_table(path: Path, spec: TableSpec) -> tuple[pd.DataFrame, int]:
    """The table with ids as int64 and times parsed, and how many exact duplicate rows were dropped.

    Line numbers in errors count the header as line 1.
    """
    path = Path(path)
    raw = _read_text_csv(path, spec.columns)
    frame = raw.copy()
    for col in spec.ids:
        frame[col] = parse_ids(raw[col], str(path), col)
    for col in spec.numbers:
        text = raw[col].str.strip()
        number = pd.to_numeric(text, errors="coerce")
        bad = text.notna() & number.isna()
        if bad.any():
            i = _first_bad(bad)
            raise InputError(f"{path}: line {i + 2}, column {col}: {raw[col].iloc[i]!r} is not a number")
        frame[col] = number
    for col in spec.times:
        refuse_time_zones(raw[col], str(path), col)
        parsed = pd.to_datetime(raw[col], errors="coerce", format="mixed")
        bad = raw[col].notna() & parsed.isna()
        if col in spec.required_times:
            bad |= raw[col].isna()
        if bad.any():
            i = _first_bad(bad)
            raise InputError(f"{path}: line {i + 2}, column {col}: {raw[col].iloc[i]!r} is not a date-time "
                             "(expected YYYY-MM-DD HH:MM:SS)")
        frame[col] = parsed
    exact = frame.duplicated(keep="first")
    n_exact = int(exact.sum())
    kept = frame[~exact]
    clash = kept[spec.key].duplicated(keep=False)
    if clash.any():
        rows = kept.index[clash.to_numpy()][:2]
        differ = [c for c in spec.columns if kept.at[rows[0], c] != kept.at[rows[1], c]
                  and not (pd.isna(kept.at[rows[0], c]) and pd.isna(kept.at[rows[1], c]))]
        raise InputError(f"{path}: lines {rows[0] + 2} and {rows[1] + 2}: {spec.key} {kept.at[rows[0], spec.key]} "
                         f"appears twice with different {', '.join(differ)}; remove the wrong row")
    return kept.reset_index(drop=True), n_exact


def read_small_tables(tables: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(patients, admissions, icustays, exact duplicate rows dropped per table)."""
    frames, duplicates = [], {}
    for name in ("hosp/patients", "hosp/admissions", "icu/icustays"):
        frame, n = read_table(tables[name], TABLES[name])
        frames.append(frame)
        duplicates[name] = n
    return frames[0], frames[1], frames[2], duplicates
