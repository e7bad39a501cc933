"""Write synthetic MIMIC-IV v2.2, MIMIC-CXR-JPG (+ DICOM copies) and ADNI exports.

The files have the exact layout and columns of the real exports, with their
quirks, so the ETL runs unchanged on either. Same seed, same bytes. Output:
<out>/mimic-iv/{hosp,icu}/*.csv.gz, <out>/mimic-cxr-jpg/, <out>/mimic-cxr-dicom/,
<out>/adni/. Each folder is replaced atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

from clinfuse.etl.atomic import atomic_dir, check_replaceable
from clinfuse.etl.errors import ConfigError
from clinfuse.etl.provenance import write_synthetic_marker
from clinfuse.pipeline.config import load_params

NAME = "synth"
HELP = "write synthetic MIMIC-IV / MIMIC-CXR-JPG / ADNI exports (the default input)"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default=None, help="output folder (default: params paths.raw, data/raw)")
    parser.add_argument("--subjects", type=int, default=None, help="MIMIC patients (default: params synth.subjects)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: params synth.seed)")
    parser.add_argument("--scale", type=int, default=None,
                        help="multiply MIMIC patients and chartevents rows K times, streamed (ETL benchmarks)")
    parser.add_argument("--size", choices=["demo", "hundredth", "tenth", "full"], default=None,
                        help="demo (default: params synth.size), or MIMIC-IV v3.1 / MIMIC-CXR-JPG 2.1.0 row counts "
                             "at 1/100, 1/10 or full size with real-resolution films (full: 433M chartevents rows, "
                             "about 30 GB written)")
    parser.add_argument("--workers", type=int, default=2, help="generator processes for a sized export (default 2)")
    parser.add_argument("--only", choices=["mimic", "adni"], default=None, help="write one dataset only")


def run(args) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from clinfuse.etl.synth.adni import write_adni_export
    from clinfuse.etl.synth.cxr import write_cxr_export
    from clinfuse.etl.synth.mimic import write_mimic_export

    params = load_params(args.params)
    s = params.synth
    subjects = s.subjects if args.subjects is None else args.subjects
    seed = s.seed if args.seed is None else args.seed
    scale = s.scale if args.scale is None else args.scale
    if subjects < 1:
        raise ConfigError(f"--subjects must be a positive number of patients, got {subjects}")
    if scale < 1:
        raise ConfigError(f"--scale must be >= 1, got {scale}")
    size = s.size if args.size is None else args.size
    if size != "demo" and (args.subjects is not None or args.scale is not None or scale != 1):
        raise ConfigError(f"--size {size} sets its own row counts; --subjects and --scale apply to --size demo only")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out or params.paths.raw)
    for name in ("mimic-iv", "mimic-cxr-jpg", "mimic-cxr-dicom", "adni"):  # refuse before any work
        if args.only is None or name.startswith(args.only):
            check_replaceable(out / name, f"synthetic-{name}")
    started = time.perf_counter()
    summary = []
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with progress:
        if args.only in (None, "mimic") and size != "demo":
            summary.append(_write_sized(out, size, seed, args.workers, progress))
        elif args.only in (None, "mimic"):
            task = progress.add_task("MIMIC-IV patients", total=subjects * scale, info="")
            rows = {"chartevents": 0}

            def on_chunk(n, n_events):
                rows["chartevents"] += n_events
                progress.update(task, advance=n, info=f"{rows['chartevents']:,} chartevents rows")

            with atomic_dir(out / "mimic-iv", "synthetic-mimic-iv") as tmp:
                counts, stays = write_mimic_export(tmp, subjects, seed, scale, on_chunk=on_chunk)
            img_task = progress.add_task("MIMIC-CXR films", total=None, info="")
            with atomic_dir(out / "mimic-cxr-jpg", "synthetic-mimic-cxr-jpg") as jpg, \
                    atomic_dir(out / "mimic-cxr-dicom", "synthetic-mimic-cxr-dicom") as dcm:
                cxr = write_cxr_export(jpg, dcm, stays, seed, s.cxr_height, s.cxr_width, s.dicom_copies,
                                       on_image=lambda: progress.advance(img_task))
            summary.append(
                f"MIMIC-IV {counts['hosp/patients']:,} patients, {counts['hosp/admissions']:,} admissions, "
                f"{counts['icu/icustays']:,} ICU stays, {counts['icu/chartevents']:,} chartevents rows; "
                f"MIMIC-CXR {cxr['images']:,} films ({cxr['dicom']} DICOM)"
            )
        if args.only in (None, "adni"):
            progress.add_task("ADNI subjects", total=None, info="")
            with atomic_dir(out / "adni", "synthetic-adni") as tmp:
                adni = write_adni_export(tmp, s.adni_subjects, seed, s.mri_size)
            summary.append(f"ADNI {adni['subjects']} subjects, {adni['visits']} visits, {adni['volumes']} T1 volumes")
    print(f"synth: {'; '.join(summary)} -> {out}/ in {time.perf_counter() - started:.1f} s")
    return 0


def _write_sized(out: Path, size_name: str, seed: int, workers: int, progress) -> str:
    """MIMIC-IV + MIMIC-CXR-JPG at a named size (etl/synth/sized.py, sized_cxr.py); the summary line."""
    from clinfuse.etl.synth.sized import write_sized_mimic_export
    from clinfuse.etl.synth.sized_cxr import write_sized_cxr_export
    from clinfuse.etl.synth.sizes import export_size

    size = export_size(size_name)
    plan = progress.add_task("ICU stays counted", total=size.icustays, info="")
    rows = progress.add_task("chartevents rows", total=size.chartevents, info="")
    hospital = progress.add_task("hospital-only patients", total=None, info="")

    def on_chunk(kind, n):
        progress.advance({"plan": plan, "icu": rows, "hospital": hospital}[kind], n)

    with atomic_dir(out / "mimic-iv", "synthetic-mimic-iv") as tmp:
        counts, stays, others = write_sized_mimic_export(tmp, size, seed, workers, on_chunk=on_chunk)
    films = progress.add_task(f"MIMIC-CXR films {size.film_width}x{size.film_height}", total=None, info="")
    with atomic_dir(out / "mimic-cxr-jpg", "synthetic-mimic-cxr-jpg") as jpg, \
            atomic_dir(out / "mimic-cxr-dicom", "synthetic-mimic-cxr-dicom") as dcm:
        cxr = write_sized_cxr_export(jpg, stays, others, size, seed, on_image=lambda: progress.advance(films))
        write_synthetic_marker(dcm, "mimic-cxr-dicom", seed, size=size.name, note="no DICOM copies at sized exports")
    return (f"MIMIC-IV ({size.name}) {counts['hosp/patients']:,} patients, {counts['hosp/admissions']:,} admissions, "
            f"{counts['icu/icustays']:,} ICU stays, {counts['icu/chartevents']:,} chartevents rows; MIMIC-CXR "
            f"{cxr['images']:,} metadata rows ({cxr['studies']:,} studies, {cxr['patients']:,} patients), "
            f"{cxr['films']:,} films {size.film_width}x{size.film_height} ({cxr['film_bytes'] / 1e9:.2f} GB)")
