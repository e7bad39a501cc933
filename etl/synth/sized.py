"""A MIMIC-IV export at a named size (1/100, 1/10 or the full MIMIC-IV v3.1 row counts), streamed.

Two kinds of patient:
- ICU patients come from `mimic.generate_chunk`, the demo's generator (same latent
  factors, labels, quirks and 48 h charting of the ETL's 12 channels), chunk by chunk.
  Chunks are first generated without chartevents to count their stays, so that the
  export has exactly the target number of ICU stays (the last chunk keeps only the
  stays it needs; its other admissions have no ICU stay, as most real admissions).
- Hospital-only patients and admissions (no ICU stay) fill patients and admissions up
  to the target, with diagnoses (about 10 codes an admission).

chartevents gets, per chunk, the demo generator's rows plus "volume" rows up to an
exact share of the target (432,997,491 rows at full size): itemids the ETL ignores
charted over the whole stay, and the ETL's own numeric itemids after the 48 h window
(so the window filter does real work), spread over stays in proportion to their length.
Volume rows are formatted without pandas (`fastcsv`) and compressed with ISA-L
(igzip level 1, about 5x faster than zlib's level 1) in worker processes, one gzip
member per chunk: members are concatenated in chunk order, so the bytes do not depend
on the number of workers, and every gzip reader (DuckDB, pandas, zcat) reads the
multi-member file as one stream.
"""

from __future__ import annotations

import io
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
from isal import isal_zlib

from clinfuse.etl.provenance import write_synthetic_marker

from . import fastcsv
from .csvgz import write_csv_gz
from .mimic import (
    COLUMNS,
    D_ITEMS,
    FILLER_CODES,
    NOISE_NUMERIC,
    NOISE_TEXT,
    VITALS,
    d_icd_table,
    d_items_table,
    generate_chunk,
    load_phenotype_codes,
)
from .sizes import ExportSize

CHUNK_PATIENTS = 100  # ICU patients per chunk: ~1M chartevents rows at full size, ~0.4 GB per worker
HOSPITAL_CHUNK = 50_000  # hospital-only patients per chunk
ISAL_LEVEL = 1
UNIT = {itemid: unit for itemid, _l, _a, _c, unit, _p in D_ITEMS}
# the ETL's numeric itemids, charted after the 48 h window: (itemid, low, high)
LATE_CHANNEL_ITEMS = [(220045, 60, 130), (220179, 90, 160), (220180, 40, 90), (220181, 55, 110),
                      (220210, 10, 30), (223761, 96.0, 101.5), (220277, 90, 100), (220621, 70, 250)]
assert {i for i, *_ in LATE_CHANNEL_ITEMS} <= {i for v in VITALS.values() for i in v.itemids}


def _gzip_member(parts: list[bytes]) -> bytes:
    """One deterministic gzip member (mtime 0, no name) holding the concatenated parts."""
    c = isal_zlib.compressobj(ISAL_LEVEL, isal_zlib.DEFLATED, 31)
    return b"".join([*(c.compress(p) for p in parts), c.flush()])


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False, lineterminator="\n")
    return buf.getvalue().encode()


class _Volume:
    """Lookup tables for the volume rows (built once per worker)."""

    def __init__(self):
        text_items = list(NOISE_TEXT)
        numeric = [(i, lo, hi) for i, (lo, hi) in NOISE_NUMERIC.items()]
        self.items = text_items + [i for i, *_ in numeric] + [i for i, *_ in LATE_CHANNEL_ITEMS]
        self.n_text, self.n_noise = len(text_items), len(text_items) + len(numeric)
        self.item_table = fastcsv.string_table([str(i) for i in self.items], 6)
        self.uom_table = fastcsv.string_table(["" if k < self.n_text else UNIT[i] for k, i in enumerate(self.items)], 8)
        ranges = [(0, 0)] * self.n_text + [(lo, hi) for _, lo, hi in numeric] + [(lo, hi) for _, lo, hi in LATE_CHANNEL_ITEMS]
        self.lo10 = np.array([round(lo * 10) for lo, _ in ranges])
        self.hi10 = np.array([round(hi * 10) for _, hi in ranges])
        n_tenths = int(self.hi10.max()) + 1
        texts = [t for i in text_items for t in NOISE_TEXT[i]]
        self.text_start = np.cumsum([0] + [len(NOISE_TEXT[i]) for i in text_items])[:-1] + n_tenths
        self.text_count = np.array([len(NOISE_TEXT[i]) for i in text_items])
        self.empty = n_tenths + len(texts)
        self.value_table = fastcsv.string_table(fastcsv.tenths_table(n_tenths) + texts + [""], 32)


_VOLUME: _Volume | None = None


def volume_rows(rng: np.random.Generator, stays: pd.DataFrame, n_rows: int) -> bytes:
    """`n_rows` chartevents CSV lines for `stays` (subject_id, hadm_id, stay_id, intime, outtime),
    spread over the stays in proportion to their length (largest remainder), as bytes."""
    global _VOLUME
    if _VOLUME is None:
        _VOLUME = _Volume()
    v = _VOLUME
    if n_rows <= 0 or not len(stays):
        return b""
    intime = fastcsv.seconds_since_epoch(stays["intime"].to_numpy())
    span = fastcsv.seconds_since_epoch(stays["outtime"].to_numpy()) - intime + 6 * 3600  # charted from intime - 6 h
    share = span / span.sum() * n_rows
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(counts - share, kind="stable")[: n_rows - counts.sum()]] += 1
    prefix = fastcsv.prefix_table(stays["subject_id"].to_numpy(), stays["hadm_id"].to_numpy(),
                                  stays["stay_id"].to_numpy())
    out = []
    ends = np.cumsum(counts)
    block = 200_000
    first = 0
    while first < len(stays):  # about `block` rows at a time: bounded memory
        last = int(np.searchsorted(ends, (ends[first - 1] if first else 0) + block, side="right")) + 1
        last = min(max(last, first + 1), len(stays))
        s = np.repeat(np.arange(first, last), counts[first:last])
        n = len(s)
        minutes = (rng.random(n) * span[s] / 60).astype(np.int64) - 6 * 60
        long_stay = span[s] > (48 + 6 + 1) * 3600
        late = long_stay & (rng.random(n) < 0.3)
        item = np.where(late, v.n_noise + rng.integers(0, len(LATE_CHANNEL_ITEMS), n), rng.integers(0, v.n_noise, n))
        window_end = 48 * 60
        minutes = np.where(late, window_end + (rng.random(n) * (span[s] / 60 - 6 * 60 - window_end)).astype(np.int64),
                           minutes)
        chart = intime[s] + minutes * 60
        is_text = item < v.n_text
        text_item = np.minimum(item, v.n_text - 1)
        tenths = v.lo10[item] + (rng.random(n) * (v.hi10[item] - v.lo10[item] + 1)).astype(np.int64)
        value = np.where(is_text, v.text_start[text_item] + (rng.random(n) * v.text_count[text_item]).astype(np.int64),
                         tenths)
        out.append(fastcsv.format_rows(
            prefix, s, rng.integers(10_000, 99_999, n), chart, chart + rng.integers(1, 40, n) * 60,
            v.item_table, item, v.value_table, value, np.where(is_text, v.empty, value), v.uom_table,
            np.zeros(n, dtype=np.uint8)))
        first = last
    return b"".join(out)


def _count_stays(args) -> int:
    seed, index, first, n = args
    return len(generate_chunk(seed, index, first, n, with_chartevents=False).tables["icu/icustays"])


def _icu_chunk(args) -> dict:
    """Gzip members of one ICU chunk's tables, its chartevents row count and its stays (for the CXR export)."""
    seed, index, first, n, keep_stays, chart_rows = args
    chunk = generate_chunk(seed, index, first, n)
    t = chunk.tables
    if keep_stays < len(t["icu/icustays"]):  # the last chunk: exactly the target number of stays
        kept = set(t["icu/icustays"]["stay_id"].iloc[:keep_stays])
        t["icu/icustays"] = t["icu/icustays"].iloc[:keep_stays]
        t["icu/chartevents"] = t["icu/chartevents"][t["icu/chartevents"]["stay_id"].isin(kept)]
        chunk.stays = chunk.stays[chunk.stays["stay_id"].isin(kept)].reset_index(drop=True)
    n_channel = len(t["icu/chartevents"])
    if n_channel > chart_rows:
        raise ValueError(f"chunk {index}: the 48 h charting alone has {n_channel} rows, over its share {chart_rows}")
    volume = volume_rows(np.random.default_rng([seed, index, 29]), chunk.stays, chart_rows - n_channel)
    members = {name: _gzip_member([_csv_bytes(frame)]) for name, frame in t.items() if name != "icu/chartevents"}
    members["icu/chartevents"] = _gzip_member([_csv_bytes(t["icu/chartevents"]), volume])
    rows = {name: len(frame) for name, frame in t.items()}
    rows["icu/chartevents"] = chart_rows
    return {"members": members, "rows": rows, "stays": chunk.stays}


def hospital_only_tables(seed: int, index: int, first_subject: int, n_patients: int, first_hadm: int,
                         n_admissions: int) -> dict[str, pd.DataFrame]:
    """Patients with hospital admissions but no ICU stay (most of MIMIC-IV's), their admissions and diagnoses."""
    rng = np.random.default_rng([seed, index, 30])
    names, codes = load_phenotype_codes()
    subj = first_subject + np.arange(n_patients)
    extra = np.bincount(rng.integers(0, n_patients, n_admissions - n_patients), minlength=n_patients)
    adm_pat = np.repeat(np.arange(n_patients), 1 + extra)
    hadm = first_hadm + np.arange(n_admissions)
    anchor_year = rng.integers(2110, 2186, n_patients)
    admit = ((anchor_year[adm_pat] - 1970).astype("datetime64[Y]").astype("datetime64[s]")
             + (rng.integers(0, 365 * 8, n_admissions) * 86400 + rng.integers(0, 86400, n_admissions)).astype("timedelta64[s]"))
    disch = admit + (rng.uniform(0.3, 12, n_admissions) * 86400).astype("timedelta64[s]")
    died = rng.random(n_admissions) < 0.012
    dod = pd.Series(np.where(died, disch, np.datetime64("NaT"))).groupby(adm_pat).max().to_numpy()

    def fmt(ts):
        return pd.Series(ts).dt.strftime("%Y-%m-%d %H:%M:%S").fillna("").to_numpy()

    patients = pd.DataFrame({
        "subject_id": subj, "gender": rng.choice(["F", "M"], n_patients), "anchor_age": rng.integers(18, 91, n_patients),
        "anchor_year": anchor_year, "anchor_year_group": rng.choice(["2008 - 2010", "2011 - 2013", "2014 - 2016",
                                                                      "2017 - 2019", "2020 - 2022"], n_patients),
        "dod": pd.Series(dod).dt.strftime("%Y-%m-%d").fillna("").to_numpy(),
    })
    admissions = pd.DataFrame({
        "subject_id": subj[adm_pat], "hadm_id": hadm, "admittime": fmt(admit), "dischtime": fmt(disch),
        "deathtime": fmt(np.where(died, disch, np.datetime64("NaT"))),
        "admission_type": rng.choice(["EW EMER.", "URGENT", "ELECTIVE", "SURGICAL SAME DAY ADMISSION", "OBSERVATION ADMIT"], n_admissions),
        "admit_provider_id": "", "admission_location": rng.choice(["EMERGENCY ROOM", "PHYSICIAN REFERRAL", "WALK-IN/SELF REFERRAL"], n_admissions),
        "discharge_location": np.where(died, "DIED", rng.choice(["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY"], n_admissions)),
        "insurance": rng.choice(["Medicare", "Medicaid", "Private", "Other"], n_admissions), "language": "ENGLISH",
        "marital_status": rng.choice(["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", ""], n_admissions),
        "race": rng.choice(["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC OR LATINO", "ASIAN", "OTHER", "UNKNOWN"], n_admissions),
        "edregtime": "", "edouttime": "", "hospital_expire_flag": died.astype(int),
    })
    # diagnoses: 1 + Poisson(9) codes per admission from every synthetic code of its ICD version
    version = np.where(anchor_year[adm_pat] < 2150, 9, 10)
    pool = {v: np.array(sorted({c for k in names for c in codes[v].get(k, [])} | set(FILLER_CODES[v]))) for v in (9, 10)}
    n_codes = 1 + rng.poisson(9, n_admissions)
    d_adm = np.repeat(np.arange(n_admissions), n_codes)
    d_ver = version[d_adm]
    pick = rng.random(len(d_adm))
    code = np.where(d_ver == 9, pool[9][(pick * len(pool[9])).astype(int)], pool[10][(pick * len(pool[10])).astype(int)])
    diagnoses = pd.DataFrame({"subject_id": subj[adm_pat][d_adm], "hadm_id": hadm[d_adm],
                              "seq_num": np.arange(len(d_adm)) - np.repeat(np.cumsum(n_codes) - n_codes, n_codes) + 1,
                              "icd_code": code, "icd_version": d_ver})
    return {"hosp/patients": patients[COLUMNS["hosp/patients"]], "hosp/admissions": admissions[COLUMNS["hosp/admissions"]],
            "hosp/diagnoses_icd": diagnoses}


def _hospital_chunk(args) -> dict:
    tables = hospital_only_tables(*args)
    return {"members": {name: _gzip_member([_csv_bytes(f)]) for name, f in tables.items()},
            "rows": {name: len(f) for name, f in tables.items()}, "stays": None}


def plan_icu_chunks(seed: int, size: ExportSize, pool, on_chunk=None) -> list[tuple[int, int, int, int, int, int]]:
    """(seed, index, first_subject, n, stays kept, chartevents rows) per ICU chunk: exactly `size.icustays`
    stays and `size.chartevents` rows in all, each chunk's rows in proportion to its stays."""
    plans: list[tuple[int, int, int, int]] = []  # (seed, index, first_subject, n)
    stays: list[int] = []
    index = 0
    while sum(stays) < size.icustays:
        batch = [(seed, index + k, 10_000_000 + (index + k) * CHUNK_PATIENTS, CHUNK_PATIENTS) for k in range(8)]
        for args, n in zip(batch, pool.map(_count_stays, batch), strict=True):
            if sum(stays) < size.icustays:
                plans.append(args)
                stays.append(min(n, size.icustays - sum(stays)))
                if on_chunk:
                    on_chunk("plan", stays[-1])
        index += len(batch)
    cum = np.cumsum(stays)
    edges = np.round(np.concatenate([[0], cum]) * size.chartevents / size.icustays).astype(np.int64)
    return [(*args, kept, int(edges[i + 1] - edges[i])) for i, (args, kept) in enumerate(zip(plans, stays, strict=True))]


def write_sized_mimic_export(out_dir: Path, size: ExportSize, seed: int, workers: int = 2,
                             on_chunk=None) -> tuple[dict[str, int], pd.DataFrame, np.ndarray]:
    """Write hosp/ and icu/ with `size`'s exact row counts; return row counts, every ICU stay
    (with its latent factors, for the CXR export) and the hospital-only subject ids.

    on_chunk(kind, n) is called after each chunk: kind 'plan' (its stays counted), 'icu' (written,
    n = its chartevents rows) or 'hospital' (written, n = its patients)."""
    out_dir = Path(out_dir)
    (out_dir / "hosp").mkdir(parents=True, exist_ok=True)
    (out_dir / "icu").mkdir(parents=True, exist_ok=True)
    names = [n for n in COLUMNS if n not in ("icu/d_items", "hosp/d_icd_diagnoses")]
    files = {n: open(out_dir / f"{n}.csv.gz", "wb") for n in names}
    counts = dict.fromkeys(names, 0)
    stays = []
    ctx = multiprocessing.get_context("spawn")  # no fork of a parent holding threads or big arrays
    try:
        for n in names:
            files[n].write(_gzip_member([(",".join(COLUMNS[n]) + "\n").encode()]))
        with ctx.Pool(max(1, workers)) as pool:
            plans = plan_icu_chunks(seed, size, pool, on_chunk)
            icu_patients = len(plans) * CHUNK_PATIENTS
            icu_admissions = None
            for result in pool.imap(_icu_chunk, plans):
                for n, member in result["members"].items():
                    files[n].write(member)
                for n, r in result["rows"].items():
                    counts[n] += r
                stays.append(result["stays"])
                if on_chunk:
                    on_chunk("icu", result["rows"]["icu/chartevents"])
            icu_admissions = counts["hosp/admissions"]
            hospital_patients = size.patients - icu_patients
            hospital_admissions = size.admissions - icu_admissions
            if hospital_patients < 0 or hospital_admissions < hospital_patients:
                raise ValueError(f"size {size.name}: {icu_patients} ICU patients with {icu_admissions} admissions "
                                 f"leave no room for {size.patients} patients / {size.admissions} admissions")
            first_subject = 10_000_000 + icu_patients
            first_hadm = 20_000_000 + 3 * icu_patients + 1_000_000  # above every ICU patient's hadm_id
            bounds = np.linspace(0, hospital_patients, max(1, -(-hospital_patients // HOSPITAL_CHUNK)) + 1).astype(int)
            adm_bounds = np.round(bounds / max(hospital_patients, 1) * hospital_admissions).astype(int)
            jobs = [(seed, k, first_subject + bounds[k], bounds[k + 1] - bounds[k], first_hadm + adm_bounds[k],
                     adm_bounds[k + 1] - adm_bounds[k]) for k in range(len(bounds) - 1) if bounds[k + 1] > bounds[k]]
            for job, result in zip(jobs, pool.imap(_hospital_chunk, jobs), strict=True):
                for n, member in result["members"].items():
                    files[n].write(member)
                for n, r in result["rows"].items():
                    counts[n] += r
                if on_chunk:
                    on_chunk("hospital", job[3])
    finally:
        for f in files.values():
            f.close()
    write_csv_gz(out_dir / "icu/d_items.csv.gz", d_items_table())
    write_csv_gz(out_dir / "hosp/d_icd_diagnoses.csv.gz", d_icd_table())
    write_synthetic_marker(out_dir, "mimic-iv", seed, size=size.name)
    hospital_subjects = np.arange(first_subject, first_subject + hospital_patients)
    return counts, pd.concat(stays, ignore_index=True), hospital_subjects
