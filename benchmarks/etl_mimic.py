"""EHR extraction speed and peak memory on sized synthetic exports, and this machine's limit.

Writes (once, cached under --cache) `clinfuse synth --size <s> --only mimic` exports, then
per size runs the EHR extraction (cohort + chartevents pass) in a fresh process and prints
  size=<s> reader=<fast|duckdb> rows=<n> seconds=<wall> cpu_s=<user+sys> rows_per_s=<r> peak_rss_mb=<m>
The limit: inflating the whole chartevents.csv.gz with ISA-L (one thread), and DuckDB's
parallel CSV reader parsing an uncompressed prefix of it (--limit-mb), per row:
  limit inflate_s=<s> parse_s=<s> (per the whole file) limit_s=<max(inflate, (inflate + parse) / 2)> in CPU seconds
and last: the time per row at each size relative to the smallest (flat = within 15 %), the
433M-row extrapolation and the ratio of the extraction to the limit.
Usage: python benchmarks/etl_mimic.py [--sizes hundredth tenth] [--duckdb] [--quick]
(--sizes hundredth tenth full measures at 4.3M, 43M and 433M rows; full needs about 10 GB.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from clinfuse.etl.mimic.cohort import join_stays, select_cohort
from clinfuse.etl.mimic.ehr import connect, extract_ehr_values, load_variables
from clinfuse.etl.mimic.schema import locate_tables
from clinfuse.etl.mimic.tables import read_small_tables
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
settings = MimicEtlSettings()
root, memory_limit, spill, fast = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "fast"
t = time.perf_counter()
tables = locate_tables(root)
stays, _ = select_cohort(join_stays(*read_small_tables(tables)[:3]), "phenotype", settings.min_age,
                         settings.min_stay_hours)
con = connect(memory_limit, settings.threads, spill)
values, counts = extract_ehr_values(con, tables["icu/chartevents"], stays, load_variables(), settings.window_hours,
                                    fast=fast)
seconds = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "cpu_s": r.ru_utime + r.ru_stime, "stays": len(values),
                  "peak_rss_mb": r.ru_maxrss / 1024}))
"""

LIMIT = r"""
import json, resource, sys, time
import duckdb
from isal import igzip
path, prefix_path, limit_bytes, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
t, c, total, kept = time.perf_counter(), cpu(), 0, 0
with igzip.open(path, "rb") as fh, open(prefix_path, "wb") as out:
    while block := fh.read(1 << 24):
        total += len(block)
        if kept < limit_bytes:
            piece = block[: limit_bytes - kept]
            out.write(piece)
            kept += len(piece)
inflate_s, inflate_cpu = time.perf_counter() - t, cpu() - c
with open(prefix_path, "rb+") as fh:  # cut the prefix at its last full line
    data = fh.read()
    fh.truncate(data.rfind(b"\n") + 1)
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute("SET enable_progress_bar = false")  # a long parse prints a bar on stdout, where the JSON goes
t, c = time.perf_counter(), cpu()
con.execute(f"SELECT count(*), max(itemid), max(charttime), max(valuenum) FROM read_csv('{prefix_path}', header = true, "
            "types = {'charttime': 'TIMESTAMP', 'valuenum': 'DOUBLE', 'itemid': 'BIGINT', 'stay_id': 'BIGINT'})").fetchall()
parse_s, parse_cpu = time.perf_counter() - t, cpu() - c
share = total / max(1, min(kept, total))
print(json.dumps({"inflated_mb": total / 1e6, "inflate_s": inflate_s, "inflate_cpu": inflate_cpu,
                  "parse_s": parse_s * share, "parse_cpu": parse_cpu * share}))
"""

ROWS = {"hundredth": 4_329_975, "tenth": 43_299_749, "full": 432_997_491}


def ensure_export(cache: Path, size: str) -> Path:
    out = cache / size
    if not (out / "mimic-iv" / "icu" / "chartevents.csv.gz").exists():
        subprocess.run([sys.executable, "-m", "clinfuse.pipeline", "synth", "--out", str(out), "--size", size,
                        "--only", "mimic"], check=True, stdout=subprocess.DEVNULL)
    return out / "mimic-iv"


def measure(root: Path, reader: str, memory_limit: str) -> dict:
    with tempfile.TemporaryDirectory() as spill:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(root), memory_limit, spill, reader],
                              capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(ROWS), default=["hundredth", "tenth"])
    from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings

    parser.add_argument("--memory-limit", default=MimicEtlSettings().memory_limit,
                        help="DuckDB memory limit (default: the ETL's etl_mimic.memory_limit)")
    parser.add_argument("--duckdb", action="store_true", help="also time DuckDB's own reader (the old path)")
    parser.add_argument("--limit-mb", type=int, default=2000, help="uncompressed prefix DuckDB parses for the limit")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "clinfuse-etl-bench"))
    parser.add_argument("--quick", action="store_true", help="hundredth only (4.3M rows)")
    args = parser.parse_args()
    sizes = ["hundredth"] if args.quick else args.sizes
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs", flush=True)
    per_row, measured = {}, {}
    for size in sizes:
        root = ensure_export(cache, size)
        for reader in ["fast", "duckdb"] if args.duckdb else ["fast"]:
            r = measure(root, reader, args.memory_limit)
            rows = ROWS[size]
            per_row[(size, reader)] = r["seconds"] / rows
            measured[(size, reader)] = r
            print(f"size={size} reader={reader} rows={rows} seconds={r['seconds']:.1f} cpu_s={r['cpu_s']:.1f} "
                  f"rows_per_s={rows / r['seconds']:.0f} peak_rss_mb={r['peak_rss_mb']:.0f}", flush=True)
    largest = sizes[-1]
    path = root / "icu" / "chartevents.csv.gz"
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", LIMIT, str(path), str(Path(tmp) / "prefix.csv"),
                               str(args.limit_mb * 10**6), "2"], capture_output=True, text=True, check=True)
    lim = json.loads(proc.stdout.strip().splitlines()[-1])
    # 2 cores: one inflates while both parse; in CPU seconds, which a shared machine disturbs less than wall time
    limit_s = max(lim["inflate_cpu"], (lim["inflate_cpu"] + lim["parse_cpu"]) / 2)
    print(f"limit size={largest} inflated_mb={lim['inflated_mb']:.0f} inflate_s={lim['inflate_s']:.1f} "
          f"(cpu {lim['inflate_cpu']:.1f}) parse_s={lim['parse_s']:.1f} (cpu {lim['parse_cpu']:.1f}) "
          f"limit_s={limit_s:.1f}")
    base = per_row[(sizes[0], "fast")]
    for size in sizes:
        print(f"time_per_row_vs_{sizes[0]} size={size} ratio={per_row[(size, 'fast')] / base:.2f}")
    cpu = measured[(largest, "fast")]["cpu_s"]
    print(f"extraction_over_limit size={largest} wall_ratio={per_row[(largest, 'fast')] * ROWS[largest] / limit_s:.2f} "
          f"cpu_ratio={cpu / 2 / limit_s:.2f} (extraction CPU spread over 2 cores vs the limit)")
    print(f"extrapolated_433M_rows_minutes={per_row[(largest, 'fast')] * ROWS['full'] / 60:.1f}")


if __name__ == "__main__":
    main()
