"""Where the MIMIC-IV tables are and which columns the ETL needs from each.

MIMIC-IV v2.2 and later keep `hosp/` and `icu/`; v1.0 had `core/` and an
`ethnicity` column instead of `race`, and is refused with a clear message.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from clinfuse.etl.errors import InputError, not_utf8

REQUIRED_COLUMNS = {
    "hosp/patients": ["subject_id", "gender", "anchor_age", "anchor_year", "dod"],
    "hosp/admissions": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "race"],
    "hosp/diagnoses_icd": ["subject_id", "hadm_id", "icd_code", "icd_version"],
    "icu/icustays": ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime"],
    "icu/chartevents": ["stay_id", "charttime", "itemid", "value", "valuenum"],
}
V1_MESSAGE = "this looks like a MIMIC-IV v1.0 export ({why}); clinfuse supports v2.2 and later (hosp/ and icu/ with `race`)"


def read_header(path: Path) -> list[str]:
    """Column names from the first line of a .csv or .csv.gz file (a UTF-8 byte-order mark is not part of them)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            line = fh.readline()
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, "MIMIC-IV") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot be read as {'gzip ' if path.suffix == '.gz' else ''}CSV ({exc})") from None
    if not line.strip():
        raise InputError(f"{path}: empty file; expected a CSV header")
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")]


def only_one(candidates: list[Path], what: str) -> Path:
    """The one file of `candidates` that exists. Two (a .csv next to its .csv.gz) are refused: they may differ,
    and which one is the export is not ours to guess."""
    present = [p for p in candidates if p.is_file()]
    if not present:
        raise InputError(f"{candidates[0]}: missing; expected {what} ({' or '.join(p.name for p in candidates)})")
    if len(present) > 1:
        raise InputError(f"{present[0]}: {present[1].name} is also present; keep exactly one copy of {what} "
                         "(they may differ)")
    return present[0]


def locate_tables(root: Path) -> dict[str, Path]:
    """Validate a MIMIC-IV folder; return table name -> file path.

    Raises InputError naming the file and the expected columns on any problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: MIMIC-IV folder not found (expected hosp/ and icu/ with *.csv.gz)")
    if (root / "core").is_dir():
        raise InputError(f"{root}: " + V1_MESSAGE.format(why="it has a core/ folder"))
    found = {}
    for name, required in REQUIRED_COLUMNS.items():
        candidates = [root / f"{name}.csv.gz", root / f"{name}.csv"]
        path = only_one(candidates, f"the MIMIC-IV table {name}")
        header = read_header(path)
        if name == "hosp/admissions" and "ethnicity" in header and "race" not in header:
            raise InputError(f"{path}: " + V1_MESSAGE.format(why="admissions has `ethnicity`, not `race`"))
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; expected at least {required}")
        found[name] = path
    check_stream_start(found["icu/chartevents"], ids=["stay_id", "itemid"], time="charttime")
    return found


STREAM_SAMPLE_ROWS = 1000


def check_stream_start(path: Path, ids: list[str], time: str) -> None:
    """Refuse a streamed table whose first rows hold an id that is not a whole number or a zoned time.

    chartevents is streamed through DuckDB, whose BIGINT reading rounds `30000101.5` to a stay and
    whose TIMESTAMP reading drops an offset, both without a word; an export tool that damages ids or
    zones times does so throughout, so the first rows show it (etl/ids.py, etl/timestamps.py). A
    file that cannot be read here is left to the stream, which names the file, line and column.
    """
    import pandas as pd

    from clinfuse.etl.ids import parse_ids
    from clinfuse.etl.timestamps import refuse_time_zones

    try:
        sample = pd.read_csv(path, usecols=[*ids, time], dtype=str, nrows=STREAM_SAMPLE_ROWS, encoding="utf-8-sig",
                             keep_default_na=False, na_values=[""])
    except (UnicodeDecodeError, EOFError, OSError, ValueError, pd.errors.ParserError):
        return
    for column in ids:
        parse_ids(sample[column], str(path), column)
    refuse_time_zones(sample[time], str(path), time)
