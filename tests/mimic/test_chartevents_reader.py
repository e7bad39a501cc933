"""The fast chartevents reader (ISA-L inflate + Arrow parse, pre-filtered) gives exactly DuckDB's result,
and hands a file it cannot read as DuckDB would back to DuckDB's reader."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.etl.mimic import chartevents_reader
from clinfuse.etl.mimic.chartevents_reader import FastReadRefused, filtered_batches
from clinfuse.etl.mimic.cohort import join_stays, select_cohort
from clinfuse.etl.mimic.ehr import connect, extract_ehr_values, load_variables
from clinfuse.etl.mimic.schema import locate_tables, read_header
from clinfuse.etl.mimic.tables import read_small_tables
from clinfuse.pipeline.cli import main

GOLDEN = Path(__file__).parent / "golden" / "input" / "mimic-iv"


def _stays(root: Path) -> pd.DataFrame:
    stays, _ = select_cohort(join_stays(*read_small_tables(locate_tables(root))[:3]), "phenotype", 18, 48.0)
    return stays


def _both(root: Path):
    path, stays, variables = locate_tables(root)["icu/chartevents"], _stays(root), load_variables()
    notes = []
    fast = extract_ehr_values(connect("256MB", 1), path, stays, variables, 48, on_note=notes.append)
    slow = extract_ehr_values(connect("256MB", 1), path, stays, variables, 48, fast=False)
    return fast, slow, notes


def _assert_same(fast, slow):
    np.testing.assert_array_equal(fast[0], slow[0])  # bit for bit, NaN where NaN
    pd.testing.assert_frame_equal(fast[1], slow[1])


def test_fast_reader_gives_the_golden_export_bit_for_bit_what_duckdb_gives():
    fast, slow, notes = _both(GOLDEN)
    assert notes == []
    _assert_same(fast, slow)


def test_fast_reader_gives_a_synthetic_export_bit_for_bit_what_duckdb_gives(tmp_path, monkeypatch):
    assert main(["synth", "--out", str(tmp_path), "--subjects", "40", "--seed", "9", "--only", "mimic"]) == 0
    monkeypatch.setattr(chartevents_reader, "SEGMENT_BYTES", 1 << 16)  # many segments, cut mid-file
    fast, slow, notes = _both(tmp_path / "mimic-iv")
    assert notes == [] and np.isfinite(fast[0]).sum() > 1000
    _assert_same(fast, slow)


def test_only_the_cohorts_stays_and_the_channels_itemids_pass(tmp_path):
    path = tmp_path / "chartevents.csv"
    path.write_text("stay_id,charttime,itemid,value,valuenum\n"
                    "1,2150-01-01 10:00:00,220045,90,90\n"
                    "2,2150-01-01 10:00:00,220045,91,91\n"
                    "1,2150-01-01 10:00:00,220048,\"SR, paced\",\n"
                    "1,2150-01-01 11:00:00,223900,\"No Response-ETT\",\n")
    rows = pd.concat([b.to_pandas() for b in filtered_batches(path, read_header(path), np.array([220045, 223900]),
                                                              np.array([1]))])
    assert rows["itemid"].tolist() == [220045, 223900] and rows["stay_id"].tolist() == [1, 1]
    assert rows["value"].tolist() == ["90", "No Response-ETT"] and np.isnan(rows["valuenum"].iloc[1])


def test_a_row_arrow_cannot_parse_is_refused_not_skipped(tmp_path):
    path = tmp_path / "chartevents.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("stay_id,charttime,itemid,value,valuenum\n1,2150-01-01 10:00:00,220045,90,ninety\n")
    with pytest.raises(FastReadRefused):
        list(filtered_batches(path, read_header(path), np.array([220045]), np.array([1])))


def test_a_file_the_fast_reader_refuses_is_read_by_duckdb_with_the_same_result(monkeypatch):
    def refuse(*args, **kwargs):
        raise FastReadRefused("In CSV column #4: CSV conversion error to double")
        yield  # a generator, as the real one

    monkeypatch.setattr(chartevents_reader, "filtered_batches", refuse)
    fast, slow, notes = _both(GOLDEN)
    assert len(notes) == 1 and "reading it with DuckDB" in notes[0] and "conversion error" in notes[0]
    _assert_same(fast, slow)


class _ExplainOnly:
    """A connection that runs everything but answers the windowed table's CREATE with its JSON plan."""

    def __init__(self, con):
        self.con, self.plan = con, None

    def register(self, *args):
        return self.con.register(*args)

    def execute(self, sql, *args):
        if "CREATE OR REPLACE TEMP TABLE windowed AS" in sql:
            import json

            text = self.con.execute(sql.replace("CREATE OR REPLACE TEMP TABLE windowed AS",
                                                "EXPLAIN (FORMAT json)")).fetchall()[0][1]
            self.plan = json.loads(text)
            return None
        return self.con.execute(sql, *args)


def _scans(node) -> list[str]:
    return [node["name"]] + [name for child in node.get("children", []) for name in _scans(child)]


def _build_sides(node) -> list[list[str]]:
    here = [_scans(node["children"][1])] if node["name"] == "HASH_JOIN" else []
    return here + [side for child in node.get("children", []) for side in _build_sides(child)]


@pytest.mark.parametrize("fast", [True, False])
def test_chartevents_only_streams_every_hash_join_builds_on_a_small_table(fast):
    """DuckDB has no statistics for a CSV or an Arrow stream and once built the stay join on
    chartevents, holding every matching row in memory: memory grew with the file."""
    from clinfuse.etl.mimic import ehr

    path, stays, variables = locate_tables(GOLDEN)["icu/chartevents"], _stays(GOLDEN), load_variables()
    con = _ExplainOnly(connect("256MB", 1))
    if fast:
        con.register("chartevents_fast", chartevents_reader.reader(path, read_header(path),
                                                                    variables.itemids["itemid"].to_numpy(),
                                                                    stays["stay_id"].to_numpy()))
    ehr._create_windowed(con, path, stays, variables, 48, source="chartevents_fast" if fast else None)
    sides = [side for root in con.plan for side in _build_sides(root)]
    assert len(sides) >= 3  # the stay, item and text joins
    for side in sides:
        assert not any(name.startswith(("READ_CSV", "ARROW")) for name in side), side
