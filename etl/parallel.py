"""Order-preserving process-parallel map in chunks, with a progress callback.

Workers die with their parent: a `kill -9` of the stage must not leave decoding
processes holding hundreds of MB (Linux PR_SET_PDEATHSIG; elsewhere they exit
when they notice their parent is gone).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from .atomic import pid_alive

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Worker initializer: ask the kernel to SIGKILL this worker when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder `<tmp>/<prefix><pid>-*`, removed on exit; folders with the same
    prefix left by killed processes (their pid no longer alive) are removed first."""
    import shutil

    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{prefix}*"):
        try:
            pid = int(old.name[len(prefix):].split("-", 1)[0])
        except ValueError:
            continue
        if not pid_alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-") as tmp:
        yield Path(tmp)


def _run_chunk(fn, items):
    return [fn(item) for item in items]


def map_in_chunks(fn: Callable[[Any], Any], items: Sequence, workers: int = 1, chunk: int = 16,
                  on_done: Callable[[int], None] | None = None) -> list:
    """`[fn(x) for x in items]`, over `workers` processes when > 1 (fn must be picklable)."""
    chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    results: list = []
    runner = partial(_run_chunk, fn)
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
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
