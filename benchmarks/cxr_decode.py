"""Decode-resize speed of the CXR stage on real-size chest films, with and without JPEG draft mode.

Writes `--films` synthetic films at MIMIC-CXR-JPG's size (3056 x 2544, JPEG quality 95,
about 1.8 MB each; `etl.synth.cxr.real_size_film`) into a temporary folder, then times the
stage's own decode (`etl.mimic.cxr.decode_cxr_images`) to `--size` px:
  one process, film by film, with draft mode (DCT-domain downscaling) and without;
  the stage's process pool with `--workers` processes, with and without draft mode.
Prints per setting `<setting> films_per_s=<r> ms_per_film=<t>`, the mean and largest
absolute difference between drafted and full decodes (grey levels), and last the
extrapolated time for a paired MIMIC cohort of `--cohort-films` films:
  extrapolated_<n>_films_minutes_draft=<t> extrapolated_<n>_films_minutes_full=<t>
Usage: python benchmarks/cxr_decode.py [--films 64] [--size 224] [--workers 2] [--cohort-films 45000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clinfuse.etl.mimic.cxr import decode_cxr_images
from clinfuse.etl.parallel import map_in_chunks
from clinfuse.etl.synth.cxr import real_size_film


def write_film(args: tuple[str, int]) -> int:
    """Write one real-size film; returns its size in bytes."""
    path, seed = args
    img = real_size_film(np.random.default_rng(seed))
    Image.fromarray(img).save(path, format="JPEG", quality=95)
    return Path(path).stat().st_size


def timed(paths: list[Path], size: int, workers: int, draft: bool) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    images, failures, _ = decode_cxr_images(paths, size, workers, draft=draft)
    seconds = time.perf_counter() - start
    if failures:
        raise SystemExit(f"benchmark films failed to decode: {failures[:2]}")
    return seconds, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--films", type=int, default=64, help="films to write (the stage hands 32 per task)")
    parser.add_argument("--size", type=int, default=224, help="target size (etl_mimic.cxr_size)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cohort-films", type=int, default=45_000, help="films to extrapolate to")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clinfuse-cxr-bench-") as tmp:
        paths = [Path(tmp) / f"film{i:05d}.jpg" for i in range(args.films)]
        sizes = map_in_chunks(write_film, [(str(p), i) for i, p in enumerate(paths)], args.workers, 8)
        with Image.open(paths[0]) as im:
            width, height = im.size
        print(f"films={args.films} film_px={width}x{height} mean_mb={np.mean(sizes) / 1e6:.2f} "
              f"min_mb={np.min(sizes) / 1e6:.2f} max_mb={np.max(sizes) / 1e6:.2f} target_px={args.size}", flush=True)
        rates = {}
        images = {}
        for workers in (1, args.workers):
            for draft in (True, False):
                seconds, images[draft] = timed(paths, args.size, workers, draft)
                name = f"{'draft' if draft else 'full'}_{workers}proc"
                rates[name] = args.films / seconds
                print(f"{name} films_per_s={rates[name]:.1f} ms_per_film={1000 * seconds / args.films:.1f}",
                      flush=True)
        difference = np.abs(images[True].astype(int) - images[False].astype(int))
        print(f"draft_vs_full_mean_abs_grey_levels={difference.mean():.3f} max={difference.max()}")
    n = args.cohort_films
    print(f"extrapolated_{n}_films_minutes_draft={n / rates[f'draft_{args.workers}proc'] / 60:.1f} "
          f"extrapolated_{n}_films_minutes_full={n / rates[f'full_{args.workers}proc'] / 60:.1f} "
          f"(workers={args.workers})")


if __name__ == "__main__":
    main()
