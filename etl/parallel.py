"""Order-preserving process-parallel map in chunks, with a progress callback."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any


def _run_chunk(fn, items):
    return [fn(item) for item in items]


def map_in_chunks(fn: Callable[[Any], Any], items: Sequence, workers: int = 1, chunk: int = 16,
                  on_done: Callable[[int], None] | None = None) -> list:
    """`[fn(x) for x in items]`, over `workers` processes when > 1 (fn must be picklable)."""
    chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    results: list = []
    runner = partial(_run_chunk, fn)
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(runner, chunks):
                results.extend(part)
                if on_done:
                    on_done(len(part))
    else:
        for c in chunks:
            part = runner(c)
            results.extend(part)
            if on_done:
                on_done(len(part))
    return results
