"""Model registry settings (params.yaml `registry:`)."""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel


class RegistrySettings(StrictModel):
    example_rows: int = Field(4, ge=2)  # input example rows (>= 2 keeps the exported batch axis dynamic)
    # Seconds `clinfuse register` waits for another process's lock on the MLflow store before failing
    lock_timeout_s: float = Field(300.0, gt=0)
