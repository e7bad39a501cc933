"""EHR extraction speed and peak memory on synthetic chartevents at two sizes.

Generates synthetic MIMIC-IV exports with `--scale` (streamed, cached under
--cache), then runs the EHR stage (cohort + DuckDB chartevents pass) in a fresh
process per size and prints, per size:
  rows=<n> seconds=<s> rows_per_s=<r> peak_rss_mb=<m>
and last the extrapolation to MIMIC-IV v3.1's 433M chartevents rows:
  extrapolated_433M_rows_minutes=<t>
Usage: python benchmarks/etl_mimic.py [--rows 5e6 5e7] [--memory-limit 2GB] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROWS_PER_SUBJECT = 713  # measured on the synthetic cohort
SUBJECTS = 400
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import pandas as pd
from clinfuse.etl.mimic.cohort import join_stays, select_cohort
from clinfuse.etl.mimic.ehr import connect, extract_ehr_values, load_variables
from clinfuse.etl.mimic.schema import locate_tables
from clinfuse.etl.mimic.tables import read_small_tables
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
settings = MimicEtlSettings()
root, memory_limit = Path(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
tables = locate_tables(root)
stays, _ = select_cohort(join_stays(*read_small_tables(tables)[:3]), "phenotype", settings.min_age,
                         settings.min_stay_hours)
con = connect(memory_limit, settings.threads, sys.argv[3])
values, counts = extract_ehr_values(con, tables["icu/chartevents"], stays, load_variables(), settings.window_hours)
seconds = time.perf_counter() - t
rows = con.execute(f"SELECT count(*) FROM read_csv('{tables['icu/chartevents'].as_posix()}', header=true)").fetchone()[0]
print(json.dumps({"rows": rows, "seconds": seconds, "stays": len(values),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ensure_export(cache: Path, scale: int) -> Path:
    out = cache / f"scale-{scale}"
    if not (out / "mimic-iv" / "icu" / "chartevents.csv.gz").exists():
        subprocess.run([sys.executable, "-m", "clinfuse.pipeline", "synth", "--out", str(out), "--subjects", str(SUBJECTS),
                        "--scale", str(scale), "--only", "mimic"], check=True, stdout=subprocess.DEVNULL)
    return out / "mimic-iv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=float, nargs=2, default=[5e6, 5e7])
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "clinfuse-etl-bench"))
    parser.add_argument("--quick", action="store_true", help="1M and 5M rows")
    args = parser.parse_args()
    sizes = [1e6, 5e6] if args.quick else args.rows
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    last = None
    for rows in sizes:
        scale = max(1, round(rows / (ROWS_PER_SUBJECT * SUBJECTS)))
        root = ensure_export(cache, scale)
        with tempfile.TemporaryDirectory() as spill:
            proc = subprocess.run([sys.executable, "-c", CHILD, str(root), args.memory_limit, spill],
                                  capture_output=True, text=True, check=True)
        last = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"rows={last['rows']} seconds={last['seconds']:.1f} rows_per_s={last['rows'] / last['seconds']:.0f} "
              f"peak_rss_mb={last['peak_rss_mb']:.0f}", flush=True)
    print(f"extrapolated_433M_rows_minutes={433e6 / (last['rows'] / last['seconds']) / 60:.1f}")


if __name__ == "__main__":
    main()
