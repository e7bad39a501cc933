"""Efficiency per method (paper Table 10): training step time, inference time per sample, peak memory.

Every method is measured on the same model (the run's encoders) and the same batch,
each in a fresh spawned process so that the peak-memory figure is that method's own:
on CUDA `torch.cuda.max_memory_allocated`, on CPU the rise of the process's peak
resident set (ru_maxrss) over its resident size before the first step. Times are
medians over `steps` after `warmup` steps (CUDA synchronised).
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
from typing import Any

import torch


def synthetic_batch(shapes: dict[str, tuple[int, ...]], num_outputs: int, task_type: str, batch: int,
                    device: torch.device, seed: int = 0) -> dict:
    """A fixed batch with the cohort's input shapes (all modalities present)."""
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.rand(batch, *shape, generator=g).to(device) for m, shape in shapes.items()}
    if task_type == "multiclass":
        y = torch.randint(0, num_outputs, (batch,), generator=g)
    else:
        y = (torch.rand(batch, num_outputs, generator=g) > 0.8).float()
    return {"inputs": inputs, "present": {m: torch.ones(batch, dtype=torch.bool, device=device) for m in shapes},
            "y": y.to(device)}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    from clinfuse.models.build import build_model
    from clinfuse.models.methods import METHODS

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    torch.manual_seed(0)
    model = build_model(job["encoders"], list(job["shapes"]), job["shapes"], job["num_outputs"],
                        method=job["method"], task_type=job["task_type"], options=job["options"]).to(device)
    method = METHODS[job["method"]](model, torch.optim.AdamW(model.parameters(), lr=1e-4), job["task_type"],
                                    **job["options"])
    batch = synthetic_batch(job["shapes"], job["num_outputs"], job["task_type"], job["batch"], device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mib()
    model.train()
    for _ in range(job["warmup"]):
        method.step(batch)
    sync()
    step_times = []
    for _ in range(job["steps"]):
        t = time.perf_counter()
        method.step(batch)
        sync()
        step_times.append(time.perf_counter() - t)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    model.eval()
    infer = []
    with torch.no_grad():
        for _ in range(job["steps"]):
            t = time.perf_counter()
            model(batch["inputs"], batch["present"])
            sync()
            infer.append(time.perf_counter() - t)
    return {"step_ms": 1000 * statistics.median(step_times),
            "inference_ms_per_sample": 1000 * statistics.median(infer) / job["batch"],
            "peak_memory_mib": max(peak, 0.0), "memory_kind": "CUDA allocated" if device.type == "cuda"
            else "CPU peak RSS rise"}


def measure_methods(methods: dict[str, tuple[str, dict]], encoders: dict, shapes: dict[str, tuple[int, ...]],
                    num_outputs: int, task_type: str, batch: int = 8, steps: int = 5, warmup: int = 2,
                    device: str = "cpu", threads: int = 1) -> dict[str, dict[str, Any]]:
    """{label: figures} for each method on one model/batch, each in its own spawned process.

    Args:
        methods: label -> (registry name, options), e.g. {"masam": ("masam", {"rho": 0.3})}.
        encoders: modality -> encoder spec (a model preset's `encoders`).
        shapes: modality -> per-sample input shape (images with their channel axis).
        num_outputs / task_type: the head.
        batch, steps, warmup: the measured batch size and step counts.
        device: "cpu" or "cuda"; threads: torch CPU threads in each process.
    """
    ctx = multiprocessing.get_context("spawn")
    out = {}
    for label, (name, options) in methods.items():
        job = {"method": name, "options": options, "encoders": encoders, "shapes": shapes, "num_outputs": num_outputs,
               "task_type": task_type, "batch": batch, "steps": steps, "warmup": warmup, "device": device,
               "threads": threads}
        with ctx.Pool(1) as pool:
            out[label] = pool.apply(_measure, (job,))
        out[label]["ratio_to_late_fusion"] = None
    ref = next((v for k, v in out.items() if k == "late_fusion"), None)
    for v in out.values():
        if ref:
            v["ratio_to_late_fusion"] = v["step_ms"] / ref["step_ms"]
    return out
