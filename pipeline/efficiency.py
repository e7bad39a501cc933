"""Efficiency per method (paper Table 10): training step time, inference time per sample, peak memory.

Every method is measured on the same model (the run's encoders, freshly initialised with
the same seed) and the same synthetic batch, one method after another in the calling
process (the analyze stage's, or `benchmarks/efficiency.py`'s). The memory figure needs no
process of its own: it counts the method's own tensor allocations
(`evaluation.efficiency.peak_allocations`), not the process's resident size, which other work
in the same process would share.

Per method:
- memory: the peak tensor memory from building the model and optimizer through its first two
  training steps (the first step creates the gradients and the optimizer's state, the second
  runs with them in place): weights, gradients, optimizer state, activations, the method's own
  copies; the input batch is excluded. On CPU from torch's profiler memory events, on CUDA
  from `torch.cuda.max_memory_allocated`;
- step time: `repeats` timed training steps after `warmup` untimed ones, as median, quartiles
  and range, the methods' steps interleaved round by round; timed by the process's CPU time on
  CPU (the machine's other work does not count) and by the wall clock on CUDA (synchronised);
- inference: `repeats` timed forward passes (eval mode, no gradients) after `warmup`, per sample,
  interleaved likewise.

The caller's torch thread count, grad mode and random state are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from clinfuse.evaluation.efficiency import (
    CLOCKS,
    CPU_MEMORY,
    CUDA_MEMORY,
    MIB,
    peak_allocations,
    spread,
    time_calls,
)

MEMORY_STEPS = 2  # training steps the memory figure covers (see the module docstring)


def synthetic_batch(shapes: dict[str, tuple[int, ...]], num_outputs: int, task_type: str, batch: int,
                    device: torch.device, seed: int = 0) -> dict:
    """A fixed batch with the cohort's input shapes (all modalities present).

    Args:
        shapes: modality -> per-sample input shape, e.g. {"ehr": (48, 24), "cxr": (1, 64, 64)}.
        num_outputs / task_type: K and the task; y is `[batch]` int64 (multiclass) or `[batch, K]` float.
        batch: B; device: where the tensors live; seed: the generator's seed.
    Returns:
        {"inputs": {m: [B, *shape]}, "present": {m: [B] bool, all True}, "y": labels}.
    """
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.rand(batch, *shape, generator=g).to(device) for m, shape in shapes.items()}
    if task_type == "multiclass":
        y = torch.randint(0, num_outputs, (batch,), generator=g)
    else:
        y = (torch.rand(batch, num_outputs, generator=g) > 0.8).float()
    return {"inputs": inputs, "present": {m: torch.ones(batch, dtype=torch.bool, device=device) for m in shapes},
            "y": y.to(device)}


def memory_description(device: str) -> str:
    """What the peak-memory column is, in words, for the table's header."""
    where = CUDA_MEMORY if torch.device(device).type == "cuda" else CPU_MEMORY
    return (f"peak {where} from building the model through its first {MEMORY_STEPS} training steps: weights, "
            "gradients, optimizer state, activations and the method's own copies (the input batch excluded); "
            "not the process's resident size")


def default_clock(device: str) -> str:
    """"cpu" on a CPU device, "wall" on CUDA (see `measure_methods`)."""
    return "wall" if torch.device(device).type == "cuda" else "cpu"


@contextmanager
def _isolated(threads: int, device: torch.device) -> Iterator[None]:
    """Run with `threads` torch CPU threads and gradients on (a step needs them, whatever the caller's mode);
    the caller's thread count, grad mode and random state come back after."""
    before = torch.get_num_threads()
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.enable_grad():
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _build(name: str, options: dict, encoders: dict, shapes: dict[str, tuple[int, ...]], num_outputs: int,
           task_type: str, device: torch.device) -> tuple[torch.nn.Module, Any]:
    from clinfuse.models.build import build_model
    from clinfuse.models.methods import METHODS

    torch.manual_seed(0)  # the same initial weights for every method
    model = build_model(encoders, list(shapes), shapes, num_outputs, method=name, task_type=task_type,
                        options=options).to(device)
    method = METHODS[name](model, torch.optim.AdamW(model.parameters(), lr=1e-4), task_type, **options)
    return model, method


def measure_methods(methods: dict[str, tuple[str, dict]], encoders: dict, shapes: dict[str, tuple[int, ...]],
                    num_outputs: int, task_type: str, batch: int = 8, repeats: int = 10, warmup: int = 2,
                    device: str = "cpu", threads: int = 1, clock: str | None = None) -> dict[str, dict[str, Any]]:
    """{label: figures} for each method on one model and batch, all in this process.

    Args:
        methods: label -> (registry name, options), e.g. {"masam": ("masam", {"rho": 0.3})}.
        encoders: modality -> encoder spec (a model preset's `encoders`).
        shapes: modality -> per-sample input shape (images with their channel axis).
        num_outputs / task_type: the head.
        batch: the measured batch size; repeats: timed steps and forward passes per method;
        warmup: untimed steps (and forward passes) before the timed ones.
        device: "cpu" or "cuda"; threads: torch CPU threads while measuring (restored after).
        clock: "cpu" (process CPU time: steady on a shared machine; with one thread it is what a
            step costs on an idle one) or "wall"; None: "cpu" on CPU, "wall" on CUDA (the GPU's
            work shows in wall time only). See `evaluation.efficiency.CLOCKS`.
    Returns:
        label -> {"step_ms": spread, "inference_ms_per_sample": spread (see `evaluation.efficiency.spread`),
        "peak_memory_mib": float, "ratio_to_late_fusion": median step time over late fusion's (None
        without a late_fusion label)}.
    """
    dev = torch.device(device)
    sync: Callable[[], object] | None = torch.cuda.synchronize if dev.type == "cuda" else None
    clock = clock or default_clock(device)
    if clock not in CLOCKS:
        raise ValueError(f"efficiency clock {clock!r}: expected one of {sorted(CLOCKS)}")
    now = CLOCKS[clock][0]
    out: dict[str, dict[str, Any]] = {}
    with _isolated(threads, dev):
        data = synthetic_batch(shapes, num_outputs, task_type, batch, dev)

        def first_steps(name: str, options: dict) -> Callable[[], None]:
            def run() -> None:  # built inside the window, so the weights count; the batch exists before it
                _, method = _build(name, options, encoders, shapes, num_outputs, task_type, dev)
                for _ in range(MEMORY_STEPS):
                    method.step(data)
            return run

        # All methods in one memory pass, one model alive at a time (on CPU one profiler session: its
        # start costs about a second), then the timings without the profiler, in interleaved rounds
        # (evaluation.efficiency.time_calls) so that background load slows every method alike.
        peaks = peak_allocations({label: first_steps(*spec) for label, spec in methods.items()}, dev)
        built = {label: _build(name, options, encoders, shapes, num_outputs, task_type, dev)
                 for label, (name, options) in methods.items()}
        steps = time_calls({label: partial(method.step, data) for label, (_, method) in built.items()},
                           repeats, warmup, sync, now)
        for model, _ in built.values():
            model.eval()
        with torch.no_grad():
            forward = time_calls({label: partial(model, data["inputs"], data["present"])
                                  for label, (model, _) in built.items()}, repeats, warmup, sync, now)
        del built
        for label in methods:
            out[label] = {"step_ms": spread(steps[label]),
                          "inference_ms_per_sample": spread(forward[label], 1000.0 / batch),
                          "peak_memory_mib": peaks[label] / MIB, "ratio_to_late_fusion": None}
    ref = out.get("late_fusion")
    for row in out.values():
        if ref:
            row["ratio_to_late_fusion"] = row["step_ms"]["median"] / ref["step_ms"]["median"]
    return out
