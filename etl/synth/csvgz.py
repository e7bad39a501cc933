"""Deterministic, streamable gzip CSV writing (same rows -> same bytes)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd


class GzipCsvWriter:
    """Append DataFrames to one `.csv.gz`; the header is written once.

    gzip's header holds a timestamp and the file name; both are fixed (mtime 0,
    no name) so that the same seed gives byte-identical exports.
    """

    def __init__(self, path: Path, columns: list[str], compresslevel: int = 6):
        self.path = Path(path)
        self.columns = list(columns)
        self._raw = open(self.path, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=compresslevel)
        self._gz.write((",".join(self.columns) + "\n").encode())
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if list(frame.columns) != self.columns:
            raise ValueError(f"{self.path.name}: columns {list(frame.columns)} != {self.columns}")
        buf = io.StringIO()
        frame.to_csv(buf, index=False, header=False, lineterminator="\n")
        self._gz.write(buf.getvalue().encode())
        self.rows += len(frame)

    def close(self) -> None:
        self._gz.close()
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_csv_gz(path: Path, frame: pd.DataFrame, compresslevel: int = 6) -> None:
    """Write one DataFrame as a deterministic `.csv.gz`."""
    with GzipCsvWriter(path, list(frame.columns), compresslevel) as writer:
        writer.write(frame)
