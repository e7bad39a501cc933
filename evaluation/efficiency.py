"""Measuring cost: repeated timings with their spread, and the peak tensor memory a piece of work allocates.

Pure with respect to the project (torch and numpy only), so the analyze stage and
`benchmarks/efficiency.py` share one definition of each figure:

- `time_calls` runs each callable `warmup` times untimed (first-call costs: lazy
  initialisation, allocator and kernel caches), then `repeats` timed rounds over all of them
  (interleaved); `spread` turns the timings into a median with its quartiles and range.
- `peak_allocations` runs named callables and returns, for each, the highest amount of
  tensor memory it had allocated at any moment beyond what was live when it started.
  On CUDA that is `torch.cuda.max_memory_allocated` after `torch.cuda.reset_peak_memory_stats`,
  less `torch.cuda.memory_allocated` at the start. On CPU torch keeps no such counter, so the
  figure comes from torch's profiler with `profile_memory=True`: every allocation and free of
  torch's CPU allocator is an event with its signed size, and the peak is the largest running
  sum of those sizes inside the callable's window. It counts tensors (activations, gradients,
  optimizer state, copies a method makes), not memory that BLAS/oneDNN or Python allocate
  themselves, and not the process's resident size. The profiler does not see frees of memory
  allocated before its session started, so on CPU a callable that frees such memory is not
  credited for it (its figure is then its own allocations' peak).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

MIB = 2**20
CPU_MEMORY = ("CPU tensor memory (torch profiler allocation events: running sum of the CPU allocator's "
              "allocations and frees)")
CUDA_MEMORY = "CUDA tensor memory (torch.cuda.max_memory_allocated after reset_peak_memory_stats)"
# The clocks `time_calls` can read, by name, with what their figure means.
CLOCKS: dict[str, tuple[Callable[[], float], str]] = {
    "wall": (time.perf_counter, "wall-clock time"),
    "cpu": (time.process_time, "CPU time of the measuring process (all its threads; on a machine shared with other "
                               "work, unlike wall time, it leaves out the time spent waiting for a core)"),
}
_WINDOW = "clinfuse.efficiency:"  # prefix of the profiler ranges that delimit each callable


def spread(seconds: Sequence[float], scale: float = 1000.0) -> dict[str, float | int]:
    """Median, quartiles and range of repeated timings, multiplied by `scale` (1000: seconds -> ms).

    Quartiles are numpy's default (linear interpolation between order statistics), e.g.
    [1, 2, 3, 4, 5] s -> median 3000, q1 2000, q3 4000, min 1000, max 5000 ms.

    Args:
        seconds: `[n]` timings (n >= 1).
        scale: factor applied to every figure.
    Returns:
        {"median", "q1", "q3", "min", "max"} scaled, and "n" (the number of timings).
    """
    if len(seconds) == 0:
        raise ValueError("spread: no timings")
    x = np.asarray(seconds, dtype=float) * scale
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "min": float(x.min()),
            "max": float(x.max()), "n": len(x)}


def time_calls(work: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
               sync: Callable[[], object] | None = None,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each callable: `warmup` untimed calls each, then `repeats` timed rounds.

    The rounds are interleaved (a, b, c, a, b, c, ...) rather than all of a's calls first: on a
    machine shared with other work, a busy spell then slows every callable alike instead of
    making one of two identical callables look slower.

    Args:
        work: name -> callable (e.g. one training step of a method on a fixed batch).
        repeats: timed calls per callable (>= 1).
        warmup: untimed calls per callable first (>= 0): lazy initialisation, allocator and kernel caches.
        sync: called after each call before the clock is read (`torch.cuda.synchronize` on CUDA,
            where kernels run asynchronously); None on CPU.
        clock: seconds now: `time.perf_counter` (wall clock, the default) or `time.process_time`
            (CPU time of this process: what CPU work costs, unaffected by time spent waiting while
            other processes run; see `CLOCKS`).
    Returns:
        name -> `[repeats]` seconds by `clock`, in call order.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"time_calls: repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    sync = sync or (lambda: None)
    for fn in work.values():
        for _ in range(warmup):
            fn()
    sync()
    out: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(repeats):
        for name, fn in work.items():
            t = clock()
            fn()
            sync()
            out[name].append(clock() - t)
    return out


def peak_allocations(work: Mapping[str, Callable[[], object]], device: str | torch.device = "cpu") -> dict[str, int]:
    """Peak tensor bytes each callable allocates beyond what was live when it started, run in order.

    Args:
        work: name -> callable; each is run once, in the mapping's order.
        device: where the work allocates: "cpu" (torch profiler memory events, one profiling
            session for all callables) or a CUDA device (the allocator's peak counter).
    Returns:
        name -> peak bytes (>= 0): e.g. a callable that creates a 4,000,000-byte tensor, then a
        2,000,000-byte one, frees the first and creates a 1,000,000-byte one peaks at 6,000,000.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return {name: _cuda_peak(fn, device) for name, fn in work.items()}
    if device.type != "cpu":
        raise ValueError(f"peak_allocations: device {device} is neither cpu nor cuda")
    return _cpu_peaks(work)


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> int:
    gc.collect()  # see _cpu_peaks
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return max(torch.cuda.max_memory_allocated(device) - base, 0)


def _cpu_peaks(work: Mapping[str, Callable[[], object]]) -> dict[str, int]:
    from torch.profiler import ProfilerActivity, profile, record_function

    # One session for all callables: each start of the profiler costs about a second and prints
    # two lines; a named range around each callable tells its allocation events apart.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for name, fn in work.items():
            # Earlier work's garbage (reference cycles) is collected outside the window: freed inside
            # it, it would lower the running sum and hide part of this callable's peak.
            gc.collect()
            with record_function(_WINDOW + name):
                fn()
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    windows = {e.name()[len(_WINDOW):]: (e.start_ns(), e.end_ns()) for e in events
               if e.name().startswith(_WINDOW)}
    memory = _cpu_memory_events(events)
    out = {}
    for name in work:
        start, end = windows[name]
        out[name] = running_peak([nbytes for t, nbytes in memory if start <= t <= end])
    return out


def _cpu_memory_events(events) -> list[tuple[int, int]]:
    """(time ns, signed bytes) of the CPU allocator's events, in time order (a stable sort: events
    recorded in the same nanosecond keep the order they happened in)."""
    return sorted(((e.start_ns(), e.nbytes()) for e in events
                   if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")), key=lambda x: x[0])


def running_peak(deltas: Sequence[int]) -> int:
    """The largest running sum of signed allocation sizes (bytes), counted from 0 at the start.

    E.g. [+4, +2, -4, +1] -> 6; [-3, +2] -> 0 (freeing memory that was live before the start
    leaves the work's own peak at 0, never below).
    """
    total = peak = 0
    for d in deltas:
        total += d
        peak = max(peak, total)
    return peak
