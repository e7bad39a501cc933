"""Baseline visit per subject and the 3-class label (0 CN, 1 MCI, 2 AD).

The label is the baseline visit's DX (CN / MCI / Dementia); where DX is empty it
falls back to DX_bl (CN and SMC -> CN, EMCI and LMCI -> MCI, AD -> AD). SMC
("significant memory concern") subjects are cognitively normal by ADNI's
criteria, so by default they are labelled CN and counted; `smc="exclude"`
drops them instead.
"""

from __future__ import annotations

import pandas as pd

from clinfuse.etl.errors import InputError

CLASS_NAMES = ["CN", "MCI", "AD"]
DX_CODES = {"CN": 0, "MCI": 1, "Dementia": 2}
DX_BL_CODES = {"CN": 0, "SMC": 0, "EMCI": 1, "LMCI": 1, "AD": 2}
SEX_CODES = {"Male": "M", "Female": "F"}  # PTGENDER, after stripping spaces and line breaks
REQUIRED = ["RID", "PTID", "VISCODE", "EXAMDATE", "DX_bl", "DX", "AGE", "PTGENDER", "IMAGEUID"]


def check_codes(table: pd.DataFrame, source: str) -> None:
    """Unknown DX / DX_bl codes are an error naming the row (1-based, header = row 1)."""
    for column, allowed in (("DX", DX_CODES), ("DX_bl", DX_BL_CODES)):
        values = table[column].dropna().astype(str).str.strip()
        bad = values[~values.isin(list(allowed)) & (values != "")]
        if len(bad):
            row = int(bad.index[0]) + 2
            raise InputError(f"{source}: row {row}, column {column}: unknown diagnosis code {bad.iloc[0]!r}; "
                             f"expected one of {sorted(allowed)}")


def check_sex(table: pd.DataFrame, source: str) -> None:
    """PTGENDER must be Male, Female or empty once surrounding whitespace ("Male\\n") is stripped: any
    other value is an error naming the row, never a silent UNKNOWN."""
    values = table["PTGENDER"].dropna().astype(str).str.strip()
    bad = values[~values.isin(list(SEX_CODES)) & (values != "")]
    if len(bad):
        raise InputError(f"{source}: row {int(bad.index[0]) + 2}, column PTGENDER: unknown value "
                         f"{table.at[bad.index[0], 'PTGENDER']!r}; expected one of {sorted(SEX_CODES)} or empty")


def baseline_labels(table: pd.DataFrame, smc: str) -> tuple[pd.DataFrame, list[dict]]:
    """One row per subject with a usable baseline visit: RID, PTID, label, label_name, ...; and exclusions."""
    steps = [{"step": "subjects in ADNIMERGE", "reason": "", "excluded": 0, "remaining": int(table["RID"].nunique())}]
    base = table[table["VISCODE"].astype(str).str.strip() == "bl"].drop_duplicates("RID", keep="first")
    steps.append({"step": "baseline visit", "reason": "no VISCODE 'bl' row", "excluded": steps[0]["remaining"] - len(base),
                  "remaining": len(base)})
    dx = base["DX"].astype("string").str.strip().map(DX_CODES)
    dx_bl = base["DX_bl"].astype("string").str.strip().map(DX_BL_CODES)
    label = dx.fillna(dx_bl)
    n = len(base)
    base = base.assign(label=label)[label.notna()]
    steps.append({"step": "diagnosis known", "reason": "DX and DX_bl both empty", "excluded": n - len(base),
                  "remaining": len(base)})
    is_smc = base["DX_bl"].astype("string").str.strip() == "SMC"
    if smc == "exclude":
        n = len(base)
        base = base[~is_smc]
        steps.append({"step": "SMC", "reason": "DX_bl is SMC (excluded by setting)", "excluded": n - len(base),
                      "remaining": len(base)})
    base = base.assign(label=base["label"].astype(int))
    base = base.assign(label_name=[CLASS_NAMES[i] for i in base["label"]], smc=is_smc.loc[base.index].to_numpy())
    return base.sort_values("RID").reset_index(drop=True), steps
