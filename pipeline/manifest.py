"""The cohort manifest (one typed model, written by both ETL stages, checked by the loader) and
provenance records for processed cohorts (docs/cohort-format.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clinfuse.etl.errors import InputError
from clinfuse.pipeline.settings.etl_adni import AdniEtlSettings
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings

# Version of the cohort folder format. Bump it whenever manifest.json or a cohort file changes
# meaning; the loader refuses other versions (the cohort must be rebuilt by its ETL stage).
# 2: the manifest carries the cohort's title, ID columns and input descriptions.
SCHEMA_VERSION = 2
ETL_SETTINGS = {"mimic": MimicEtlSettings, "adni": AdniEtlSettings}


class _Record(BaseModel):
    """A manifest part: unknown keys are errors (a misspelt key must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class Exclusion(_Record):
    """One CONSORT step: what it required, how many samples it excluded, how many remain."""

    step: str
    reason: str
    excluded: int = Field(ge=0)
    remaining: int = Field(ge=0)


class SourceEntry(_Record):
    """An input file (size and modification time; no checksum: inputs can be 30 GB) or folder (path only)."""

    path: str
    bytes: int | None = None
    modified: str | None = None


class EhrChannelRows(_Record):
    """chartevents rows of one EHR channel inside the window, and what became of them."""

    channel: str
    rows_in_window: int
    no_value: int
    out_of_range: int
    kept: int


class UnobservedChannels(_Record):
    """EHR channels never observed in the training split (normal value, range scale)."""

    count: int
    channels: list[str]


class CxrSummary(_Record):
    """Chest film pairing and decoding: films paired, stays without one, unreadable films by reason."""

    size: int
    format: Literal["jpg", "dicom"]
    paired: int
    without_film: int
    unreadable: int
    unreadable_by_reason: dict[str, int]
    converted: dict[str, int]
    failures: list[dict[str, str]]  # the first 100: path, reason, detail


class TabularSummary(_Record):
    """Training-split statistics of the tabular features and the columns dropped for missingness."""

    dropped_missing: dict[str, float]
    numeric: dict[str, dict[str, float]]  # column -> mean, std, missing_rate
    categories: dict[str, list[str]]


class MriSummary(_Record):
    """T1 scan choice (baseline or nearest within the window) and unreadable volumes."""

    size: int
    spacing_mm: float
    scans: int
    from_baseline: int
    within_window: int
    unreadable: int
    failures: list[dict[str, str]]  # the first 100: path, reason


class CohortManifest(_Record):
    """manifest.json of a processed cohort: what the folder holds and how it was made.

    The title, ID columns, input descriptions and channel names are written here by the ETL
    stage from the settings it used; the stages after it (evaluate, report, register, predict)
    read them from here. Dataset-specific parts are None for the other dataset.
    """

    schema_version: int
    dataset: Literal["mimic", "adni"]
    task: str
    task_type: Literal["multilabel", "binary", "multiclass"]
    title: str  # e.g. "MIMIC-IV ICU phenotyping (25 CCS groups)"
    label_columns: list[str] = Field(min_length=1)
    class_names: list[str] | None = None  # multiclass: output k is class_names[k]
    modalities: list[str] = Field(min_length=1)  # array files, in model input order
    input_descriptions: dict[str, str]  # per modality: what one input is, for model cards
    patient_column: str  # the split is made on it
    id_columns: list[str]  # samples.parquet columns that identify a sample (carried into predictions)
    ehr_channels: list[str] | None = None  # EHR feature axis: variables, then their observation masks
    tabular_features: list[str] | None = None  # tabular feature axis
    n_samples: int = Field(ge=0)
    counts: dict[str, int]  # rows per split
    exclusions: list[Exclusion]
    duplicate_rows_dropped: dict[str, int] | int  # per table (MIMIC) or ADNIMERGE rows
    smc_labelled_cn: int | None = None
    label_prevalence: dict[str, dict[str, float]]  # split -> label or class -> share
    ehr_rows: list[EhrChannelRows] | None = None
    ehr_unobserved_in_training: UnobservedChannels | None = None
    phenotype_icd10_rules: dict[str, dict[str, int]] | None = None
    cxr: CxrSummary | None = None
    tabular: TabularSummary | None = None
    mri: MriSummary | None = None
    sources: dict[str, SourceEntry]  # absolute paths: the manifest stays on site
    warnings: list[str] | None = None  # what makes results weak or undefined (pipeline/cohort_checks.py); None: none
    synthetic: bool | None = None  # the sources carry the synthetic generator's marker (None: not recorded)
    synthetic_sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    config: MimicEtlSettings | AdniEtlSettings  # the ETL settings used
    created: str  # UTC, ISO 8601

    @field_validator("config", mode="before")
    @classmethod
    def _settings_of_the_dataset(cls, value, info):
        # Validate against the dataset's own settings model, so an error names that model's key.
        model = ETL_SETTINGS.get(info.data.get("dataset"))
        if model is None or not isinstance(value, dict):
            return value
        try:
            return model.model_validate(value)
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    @model_validator(mode="after")
    def _complete(self):
        if not isinstance(self.config, ETL_SETTINGS[self.dataset]):
            raise ValueError(f"config holds {type(self.config).__name__}, not the {self.dataset} ETL settings")
        if self.task_type == "multiclass" and not self.class_names:
            raise ValueError("a multiclass cohort needs class_names")
        missing = [m for m in self.modalities if m not in self.input_descriptions]
        if missing:
            raise ValueError(f"input_descriptions lacks modality {missing[0]!r}")
        if "ehr" in self.modalities and not self.ehr_channels:
            raise ValueError("a cohort with the ehr modality needs ehr_channels")
        if "tabular" in self.modalities and self.tabular_features is None:
            raise ValueError("a cohort with the tabular modality needs tabular_features")
        return self

    @property
    def partially_paired(self) -> bool:
        """True for a MIMIC cohort that keeps stays without a chest film (etl_mimic.require_cxr: false)."""
        return isinstance(self.config, MimicEtlSettings) and not self.config.require_cxr

    @property
    def registered_model_name(self) -> str:
        """The MLflow registry name of this cohort's models: `<dataset>-<task>`, with `-partial` for a
        partially paired cohort (a model that admits stays without the film is a different model: its
        champion is kept apart)."""
        return f"{self.dataset}-{self.task}" + ("-partial" if self.partially_paired else "")

    def to_json(self) -> dict:
        """The manifest.json content (dataset-specific parts of the other dataset left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def read_manifest(path: Path) -> CohortManifest:
    """Read and check a cohort's manifest.json; errors are one line naming the file and the key.

    A cohort written by another schema version is refused: its files may mean something else.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); re-run the ETL stage that wrote the cohort") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    found = data.get("schema_version")
    if found != SCHEMA_VERSION:
        raise InputError(f"{path}: cohort schema_version is {found!r}, this clinfuse reads version {SCHEMA_VERSION}; "
                         f"re-run the ETL stage (`clinfuse etl mimic|adni` or `dvc repro`) to rebuild the cohort")
    try:
        return CohortManifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<root>"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise InputError(f"{path}: {key}: {msg}{more}") from None


def source_entry(path: Path) -> dict:
    """Path, size and modification time of an input file (no checksum: inputs can be 30 GB)."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size,
            "modified": dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc).isoformat(timespec="seconds")}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_cohort_folder(out: Path, arrays: dict, samples, manifest: CohortManifest,
                        extra_json: dict | None = None) -> None:
    """Write a processed cohort (docs/cohort-format.md) atomically: `<name>.npy` per array,
    samples.parquet, extra JSON files and manifest.json (last). The folder is swapped in
    whole, so a failure leaves the previous cohort untouched."""
    from clinfuse.etl.atomic import atomic_dir, write_json, write_npy, write_parquet

    with atomic_dir(out, "cohort") as tmp:
        for name, array in arrays.items():
            write_npy(tmp / f"{name}.npy", array)
        write_parquet(tmp / "samples.parquet", samples)
        for name, obj in (extra_json or {}).items():
            write_json(tmp / name, obj)
        write_json(tmp / "manifest.json", manifest.to_json())


def exclusion_text(steps: list[dict]) -> str:
    """'reason -n; reason -n' for the steps that excluded something (one-line summaries)."""
    return "; ".join(f"{e['reason']} -{e['excluded']}" for e in steps[1:] if e["excluded"])


def redact_path(text: str, path: str | Path) -> str:
    """`text` with the file's path and name (which hold patient, study and image ids) replaced by <file>."""
    path = Path(path)
    try:
        resolved = str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13): the path as given
        resolved = str(path)
    for token in (str(path), resolved, path.name, path.stem):
        if token:
            text = text.replace(token, "<file>")
    return text


def shareable_path(path: str | Path, keep: int = 3) -> str:
    """A path with only its last `keep` components (`.../mimic-iv/hosp/patients.csv.gz`).

    Reports and model cards travel beyond the site: they name inputs relative to their export,
    never by the absolute path of the site's data root (which can name people and projects).
    """
    parts = Path(path).parts
    return ("…/" if len(parts) > keep else "") + "/".join(parts[-keep:])


def shareable_sources(sources: dict) -> dict:
    """The manifest's `sources` with shareable paths, sizes and dates kept."""
    return {name: {**entry, "path": shareable_path(entry["path"])} if "path" in entry else entry
            for name, entry in (sources or {}).items()}
