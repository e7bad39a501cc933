"""Sized synthetic exports (`clinfuse synth --size`): exact row counts, CSV bytes as pandas writes them,
films only where the ETL pairs, and the size option's validation."""

import gzip
import io
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clinfuse.etl.mimic.cxr import pair_latest_ap, read_cxr_metadata
from clinfuse.etl.synth import fastcsv
from clinfuse.etl.synth.sized import volume_rows, write_sized_mimic_export
from clinfuse.etl.synth.sized_cxr import write_sized_cxr_export
from clinfuse.etl.synth.sizes import FULL, export_size
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.settings.synth import SynthSettings

TINY = replace(FULL, name="tiny", patients=400, admissions=700, icustays=90, chartevents=120_000,
               cxr_images=500, cxr_studies=300, cxr_patients=150, film_height=64, film_width=48)


def test_full_size_is_mimic_iv_v3_1_and_mimic_cxr_jpg_2_1_0():
    s = export_size("full")
    assert (s.patients, s.admissions, s.icustays, s.chartevents) == (364_627, 546_028, 94_458, 432_997_491)
    assert (s.cxr_images, s.cxr_studies, s.cxr_patients) == (377_110, 227_835, 65_379)
    assert export_size("tenth").chartevents == 43_299_749 and export_size("tenth").film_height == 3056


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="size must be one of"):
        export_size("half")


def test_scale_with_a_named_size_is_refused_naming_both():
    with pytest.raises(ValueError, match="scale multiplies the demo export"):
        SynthSettings(size="tenth", scale=3)
    with pytest.raises(ValueError):
        SynthSettings(size="huge")


def test_size_with_subjects_on_the_command_line_is_a_one_line_error(tmp_path, capsys):
    assert main(["synth", "--size", "tenth", "--subjects", "10", "--out", str(tmp_path)]) == 2
    assert "--size tenth sets its own row counts" in capsys.readouterr().err


def test_fast_rows_are_the_bytes_pandas_writes_for_the_same_values():
    prefix = fastcsv.prefix_table(np.array([10000032, 19999999]), np.array([29079034, 20000001]),
                                  np.array([39553978, 30000002]))
    items = fastcsv.string_table(["226512", "220048"], 6)
    uoms = fastcsv.string_table(["°F", ""], 8)
    values = fastcsv.string_table(["39.4", "SR (Sinus Rhythm)", ""], 32)
    chart = pd.to_datetime(["2180-07-23 12:36:00", "2100-01-01 00:00:59"]).to_numpy()
    store = pd.to_datetime(["2180-07-23 14:45:00", "2209-12-31 23:59:59"]).to_numpy()
    got = fastcsv.format_rows(prefix, np.array([0, 1]), np.array([18704, 10000]),
                              fastcsv.seconds_since_epoch(chart), fastcsv.seconds_since_epoch(store), items,
                              np.array([0, 1]), values, np.array([0, 1]), np.array([0, 2]), uoms, np.array([0, 1]))
    expected = ("10000032,29079034,39553978,18704,2180-07-23 12:36:00,2180-07-23 14:45:00,226512,39.4,39.4,°F,0\n"
                "19999999,20000001,30000002,10000,2100-01-01 00:00:59,2209-12-31 23:59:59,220048,SR (Sinus Rhythm),,,1\n")
    assert got.decode() == expected


def test_a_field_holding_a_comma_is_refused():
    with pytest.raises(ValueError, match="unquoted CSV field"):
        fastcsv.string_table(["a,b"], 8)


def test_volume_rows_are_exactly_as_many_as_asked_and_inside_their_stays():
    stays = pd.DataFrame({"subject_id": [10000001, 10000002], "hadm_id": [20000001, 20000002],
                          "stay_id": [30000001, 30000002],
                          "intime": pd.to_datetime(["2150-01-01 10:00:00", "2150-02-01 00:00:00"]),
                          "outtime": pd.to_datetime(["2150-01-02 10:00:00", "2150-02-05 00:00:00"])})
    data = volume_rows(np.random.default_rng(0), stays, 5_001)
    ev = pd.read_csv(io.BytesIO(data), header=None, names=["subject_id", "hadm_id", "stay_id", "caregiver_id",
                     "charttime", "storetime", "itemid", "value", "valuenum", "valueuom", "warning"],
                     parse_dates=["charttime", "storetime"])
    assert len(ev) == 5_001
    per_stay = ev["stay_id"].value_counts()
    assert abs(per_stay[30000002] / per_stay[30000001] - (96 + 6) / (24 + 6)) < 0.01  # share follows length
    joined = ev.merge(stays[["stay_id", "intime", "outtime"]], on="stay_id")
    assert (joined["charttime"] >= joined["intime"] - pd.Timedelta(hours=6)).all()
    assert (joined["charttime"] < joined["outtime"]).all()
    assert (ev["storetime"] > ev["charttime"]).all()
    late_channel = joined[joined["itemid"].isin([220045, 220179, 220277])]
    assert len(late_channel) and (late_channel["charttime"] >= late_channel["intime"] + pd.Timedelta(hours=48)).all()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("sized")
    counts, stays, others = write_sized_mimic_export(out / "mimic-iv", TINY, seed=3, workers=1)
    cxr = write_sized_cxr_export(out / "mimic-cxr-jpg", stays, others, TINY, seed=3)
    return out, counts, stays, cxr


def test_sized_export_has_exactly_the_target_row_counts(tiny_export):
    out, counts, stays, cxr = tiny_export
    assert counts == {"hosp/patients": 400, "hosp/admissions": 700, "hosp/diagnoses_icd": counts["hosp/diagnoses_icd"],
                      "icu/icustays": 90, "icu/chartevents": 120_000}
    for name, n in counts.items():
        assert len(pd.read_csv(out / "mimic-iv" / f"{name}.csv.gz")) == n
    assert (cxr["images"], cxr["studies"], cxr["patients"]) == (500, 300, 150)
    meta = pd.read_csv(out / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert len(meta) == 500 and meta["dicom_id"].is_unique
    assert set(meta["ViewPosition"].fillna("")) >= {"AP", "PA", "LATERAL", "LL"}


def test_sized_export_ids_are_unique_and_every_stay_belongs_to_an_admission(tiny_export):
    out = tiny_export[0] / "mimic-iv"
    patients = pd.read_csv(out / "hosp/patients.csv.gz")
    admissions = pd.read_csv(out / "hosp/admissions.csv.gz")
    stays = pd.read_csv(out / "icu/icustays.csv.gz")
    assert patients["subject_id"].is_unique and admissions["hadm_id"].is_unique and stays["stay_id"].is_unique
    assert set(admissions["subject_id"]) == set(patients["subject_id"])
    assert set(stays["hadm_id"]) <= set(admissions["hadm_id"])
    ev = pd.read_csv(out / "icu/chartevents.csv.gz", usecols=["stay_id"])
    assert set(ev["stay_id"]) == set(stays["stay_id"])


def test_sized_chartevents_is_a_multi_member_gzip_that_any_reader_reads_whole(tiny_export):
    path = tiny_export[0] / "mimic-iv" / "icu" / "chartevents.csv.gz"
    raw = path.read_bytes()
    assert raw.count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00") > 1  # several members, no timestamps
    assert gzip.decompress(raw).count(b"\n") == 120_001


def test_films_exist_exactly_for_the_ap_films_the_etl_can_pair(tiny_export):
    out, _, stays, cxr = tiny_export
    meta = read_cxr_metadata(out / "mimic-cxr-jpg")
    files = {p.stem for p in (out / "mimic-cxr-jpg" / "files").rglob("*.jpg")}
    assert len(files) == cxr["films"] > 0
    pairs = pair_latest_ap(stays[["stay_id", "subject_id", "intime"]], meta, 48)
    assert set(pairs["dicom_id"]) <= files
    ap = meta[meta["dicom_id"].isin(files)]
    assert (ap["ViewPosition"] == "AP").all()
    with Image.open(next((out / "mimic-cxr-jpg" / "files").rglob("*.jpg"))) as img:
        assert img.size == (TINY.film_width, TINY.film_height)


def test_same_seed_gives_the_same_sized_export_whatever_the_number_of_workers(tiny_export, tmp_path):
    out = tiny_export[0]
    write_sized_mimic_export(tmp_path / "mimic-iv", TINY, seed=3, workers=2)
    for name in ("icu/chartevents", "hosp/diagnoses_icd", "icu/icustays"):
        assert (tmp_path / "mimic-iv" / f"{name}.csv.gz").read_bytes() == (out / "mimic-iv" / f"{name}.csv.gz").read_bytes()
