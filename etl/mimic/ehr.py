"""48-hour hourly EHR tensors from chartevents, streamed through DuckDB.

chartevents (433M rows in MIMIC-IV v3.1) is never loaded whole: DuckDB reads
the .csv.gz, keeps only the channels' itemids and the cohort's stays inside
[intime, intime + window), converts units, drops out-of-range values and keeps
the last value per (stay, channel, hour) with a hash aggregate, all under a
memory limit. The binned result streams into the `[N, 48, 12]` array in Arrow
batches; nothing of chartevents' size is ever held in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import yaml

from ..sql import MEMORY_SIZE, sql_literal

RESOURCE = Path(__file__).resolve().parents[1] / "resources" / "variables.yaml"


@dataclass(frozen=True)
class Variables:
    """The channel definitions of resources/variables.yaml."""

    names: list[str]  # 12 channels, tensor order
    itemids: pd.DataFrame  # itemid, channel, priority, is_text, fahrenheit, fraction, lo, hi
    text_scores: pd.DataFrame  # channel, text, score
    derived: dict[str, list[str]]  # gcs_total -> components
    ranges: dict[str, tuple[float, float]]
    impute: dict[str, float]  # value for a channel never observed in training (see etl/normalize.py)

    @property
    def mask_names(self) -> list[str]:
        return [f"{n}_mask" for n in self.names]


def load_variables(path: Path = RESOURCE) -> Variables:
    spec = yaml.safe_load(Path(path).read_text())
    names = [c["name"] for c in spec["channels"]]
    rows, text_rows, derived, ranges, impute = [], [], {}, {}, {}
    for k, ch in enumerate(spec["channels"]):
        lo, hi = ch["valid"]
        ranges[ch["name"]] = (float(lo), float(hi))
        impute[ch["name"]] = float(ch["impute"])
        if "derived_from" in ch:
            derived[ch["name"]] = ch["derived_from"]
            continue
        for priority, itemid in enumerate(ch["itemids"]):
            # one measurement in several units: no itemid outranks another, the latest reading wins
            priority = 0 if ch.get("same_measurement") else priority
            rows.append({"itemid": itemid, "channel": k, "priority": priority, "is_text": "text" in ch,
                         "fahrenheit": itemid in ch.get("fahrenheit_itemids", []),
                         "fraction": bool(ch.get("fraction_to_percent", False)), "lo": float(lo), "hi": float(hi)})
        if "text" in ch:
            for text, score in spec["text_scores"][ch["text"]].items():
                text_rows.append({"channel": k, "text": text.strip().lower(), "score": float(score)})
    return Variables(names, pd.DataFrame(rows), pd.DataFrame(text_rows), derived, ranges, impute)


def connect(memory_limit: str, threads: int, temp_directory: str | None = None):
    """A DuckDB connection bounded in memory (spills to temp_directory beyond it)."""
    if not MEMORY_SIZE.match(str(memory_limit)):
        raise ValueError(f"memory_limit must be a size such as '2GB' or '512MB', got {memory_limit!r}")
    con = duckdb.connect()
    con.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")
    # The stage shows its own progress; DuckDB's bar would share stdout with it.
    con.execute("SET enable_progress_bar = false")
    if temp_directory:
        con.execute(f"SET temp_directory = {sql_literal(temp_directory)}")
    return con


def _create_windowed(con, chartevents: Path, stays: pd.DataFrame, variables: Variables, window_hours: int,
                     source: str | None = None) -> None:
    """TEMP TABLE windowed(row, channel, priority, charttime, bin, x, ok): the cohort's
    chart rows of the 12 channels inside [intime, intime + window), units converted.
    `row` is the stay's position in `stays`. `source` names a registered relation with the
    chartevents columns (the fast reader's); by default DuckDB reads the file itself."""
    con.register("cohort_stays", pd.DataFrame({"stay_id": stays["stay_id"].to_numpy(),
                                               "intime": stays["intime"].to_numpy(),
                                               "row": np.arange(len(stays), dtype=np.int64)}))
    con.register("item_map", variables.itemids)
    con.register("text_map", variables.text_scores if len(variables.text_scores) else
                 pd.DataFrame({"channel": pd.Series(dtype=int), "text": pd.Series(dtype=str), "score": pd.Series(dtype=float)}))
    itemids = ",".join(str(int(i)) for i in variables.itemids["itemid"])
    # Explicit column types (no sniffing): `value` holds text in real exports.
    reader = source or (f"read_csv({sql_literal(Path(chartevents).as_posix())}, header = true, "
                        f"columns = {_chartevents_columns(chartevents)}, auto_detect = false)")
    # chartevents has no statistics (a CSV or an Arrow stream): DuckDB's join planner guesses it
    # small and builds the hash join on it, holding every matching row in memory (2.4 GB at 51M
    # rows). Written left-deep with the small tables on the right, and the planner's reordering
    # off for this statement, every join builds on a small table and chartevents only streams.
    con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
    try:
        _create_windowed_table(con, reader, itemids, window_hours)
    finally:
        con.execute("RESET disabled_optimizers")


def _create_windowed_table(con, reader: str, itemids: str, window_hours: int) -> None:
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE windowed AS
        WITH ev AS (
            SELECT stay_id, charttime, itemid, value, valuenum
            FROM {reader}
            WHERE itemid IN ({itemids})
        )
        , converted AS (
        SELECT CAST(s.row AS INTEGER) AS row, CAST(m.channel AS TINYINT) AS channel,
               CAST(m.priority AS TINYINT) AS priority, ev.charttime,
               CAST(floor(epoch(ev.charttime - s.intime) / 3600) AS INTEGER) AS bin,
               CASE WHEN m.is_text THEN coalesce(t.score, ev.valuenum)
                    WHEN m.fahrenheit THEN (ev.valuenum - 32) * 5.0 / 9.0
                    WHEN m.fraction AND ev.valuenum > 0 AND ev.valuenum <= 1 THEN ev.valuenum * 100
                    ELSE ev.valuenum END AS x,
               m.lo, m.hi
        FROM ev
        JOIN cohort_stays s ON ev.stay_id = s.stay_id
        JOIN item_map m ON ev.itemid = m.itemid
        LEFT JOIN text_map t ON t.channel = m.channel AND t.text = lower(trim(ev.value))
        WHERE ev.charttime >= s.intime AND ev.charttime < s.intime + to_hours({int(window_hours)})
        )
        -- narrow columns and the range test stored once (`ok`, NULL without a value): about 27 bytes a
        -- row instead of 60, so the table stays inside DuckDB's memory limit at MIMIC-IV's size
        SELECT row, channel, priority, charttime, bin, x, x BETWEEN lo AND hi AS ok FROM converted
    """)


def _channel_counts(con, variables: Variables) -> pd.DataFrame:
    counts = con.execute("""
        SELECT channel, count(*) AS rows_in_window,
               count(*) FILTER (WHERE x IS NULL) AS no_value,
               count(*) FILTER (WHERE x IS NOT NULL AND NOT ok) AS out_of_range,
               count(*) FILTER (WHERE ok) AS kept
        FROM windowed GROUP BY channel ORDER BY channel
    """).df()
    counts["channel"] = [variables.names[int(c)] for c in counts["channel"]]
    return counts


# Last value per bin: the highest-priority itemid (lowest number), then the latest charttime,
# then the largest value: a total order, so the result is deterministic. Itemids of one
# measurement in several units (temperature C/F) share priority 0: the latest reading wins.
_LAST_PER_BIN = """
    SELECT row, channel, bin,
           struct_extract(max(struct_pack(p := -priority, t := charttime, x := x)), 'x') AS value
    FROM windowed WHERE ok
    GROUP BY row, channel, bin
"""


def extract_ehr_values(con, chartevents: Path, stays: pd.DataFrame, variables: Variables,
                       window_hours: int, batch_rows: int = 1 << 20, fast: bool = True,
                       on_bytes=None, on_note=None) -> tuple[np.ndarray, pd.DataFrame]:
    """Raw hourly values `[N, T, C]` float32 (NaN where unobserved), rows in `stays` order,
    and per-channel row counts (in window, no usable value, out of range, kept).

    The per-bin aggregate is streamed as Arrow batches straight into the array, so memory
    is DuckDB's (bounded by its limit) plus the output, whatever the size of chartevents.
    Derived channels (GCS total) are left NaN: see `derive_totals`.
    `fast`: read chartevents with the parallel pre-filtering reader (chartevents_reader.py),
    falling back to DuckDB's reader for a file it refuses (the result is the same either way);
    on_bytes(done, total) reports its progress in stored bytes, on_note(text) says when it fell back.
    """
    if fast:
        import duckdb

        from .chartevents_reader import reader
        from .schema import read_header

        path = Path(chartevents)
        con.register("chartevents_fast", reader(path, read_header(path), variables.itemids["itemid"].to_numpy(),
                                                stays["stay_id"].to_numpy(), on_bytes))
        try:
            _create_windowed(con, chartevents, stays, variables, window_hours, source="chartevents_fast")
        except duckdb.Error as exc:
            fast = False
            if on_note:
                on_note(f"fast reader refused the file ({str(exc).splitlines()[0][:160]}); reading it with DuckDB")
        finally:
            con.unregister("chartevents_fast")
    if not fast:
        _create_windowed(con, chartevents, stays, variables, window_hours)
    counts = _channel_counts(con, variables)
    values = np.full((len(stays), window_hours, len(variables.names)), np.nan, dtype=np.float32)
    reader_ = con.sql(_LAST_PER_BIN).to_arrow_reader(batch_rows)
    for batch in reader_:
        values[batch.column(0).to_numpy(), batch.column(2).to_numpy(), batch.column(1).to_numpy()] = \
            batch.column(3).to_numpy()
    con.execute("DROP TABLE windowed")
    return values, counts


def _chartevents_columns(path: Path) -> str:
    """DuckDB `columns=` for the file's header: parsed types for the columns we use, VARCHAR otherwise."""
    from .schema import read_header

    wanted = {"stay_id": "BIGINT", "charttime": "TIMESTAMP", "itemid": "BIGINT", "value": "VARCHAR",
              "valuenum": "DOUBLE"}
    cols = ", ".join(f"{sql_literal(c)}: '{wanted.get(c, 'VARCHAR')}'" for c in read_header(Path(path)))
    return "{" + cols + "}"


def derive_totals(values: np.ndarray, variables: Variables) -> np.ndarray:
    """Fill derived channels (GCS total = eye + verbal + motor when all three are in the same hour)."""
    out = values.copy()
    for name, parts in variables.derived.items():
        k = variables.names.index(name)
        total = sum(values[..., variables.names.index(p)] for p in parts)  # NaN unless all three observed
        lo, hi = variables.ranges[name]
        out[..., k] = np.where((total >= lo) & (total <= hi), total, np.nan)
    return out
