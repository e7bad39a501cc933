"""MIMIC ETL settings (params.yaml `etl_mimic:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from clinfuse.etl.sql import MEMORY_SIZE

from .base import StrictModel


class MimicEtlSettings(StrictModel):
    """Cohort, EHR window, chest X-ray pairing, split and DuckDB resources."""

    window_hours: int = Field(48, ge=1)
    min_age: int = 18
    min_stay_hours: float = 48.0  # mortality cohort only
    cxr_window_hours: int = Field(48, ge=1)
    cxr_size: int = Field(64, ge=8)  # 224 for the paper preset
    cxr_format: Literal["jpg", "dicom"] = "jpg"
    require_cxr: bool = True  # the paper's paired cohort
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 42
    # DuckDB's own limit (it spills to disk beyond it). The process also holds Python, Arrow's parse
    # buffers and the binned array: at 433M chartevents rows "2GB" here gave a 2,062 MiB peak RSS and
    # "1.5GB" 1,946 MiB in the same time (benchmarks/etl_mimic.py), within the ETL's 2 GiB bound.
    memory_limit: str = "1.5GB"
    threads: int = Field(2, ge=1)
    workers: int = Field(2, ge=1)  # image decoding processes

    @field_validator("memory_limit")
    @classmethod
    def _is_a_size(cls, v):
        # Pasted into DuckDB's SET: only a number and a unit, never SQL.
        if not MEMORY_SIZE.match(v):
            raise ValueError(f"expected a size with units such as '2GB' or '512MB', got {v!r}")
        return v

    @field_validator("split")
    @classmethod
    def _sums_to_one(cls, v):
        if abs(sum(v) - 1) > 1e-6 or min(v) < 0:
            raise ValueError("train/val/test fractions must be non-negative and sum to 1")
        return v
