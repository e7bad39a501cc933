"""Training throughput (samples/s) and peak memory of the paper preset, late fusion and MASAM.

Runs the trainer's own inner loop on an in-memory paired cohort of random data: uint8 films
held as `pipeline.data.split_tensors` holds them (host memory, pinned per batch, on CUDA),
batches from `SplitTensors.batches`, each step under `pipeline.inference.autocast` (bf16 on
CUDA unless --no-bf16), 2D convolutions channels-last on CUDA. Each method runs in a fresh
process (so its peak memory is its own) that hands its figures back through a file. Prints
per method:
  <method> device=<d> batch=<B> size=<S> steps=<n> samples_per_s=<r> ms_per_step=<t> peak_mib=<m> [host_syncs_per_step=<k>]
and last `masam/late_fusion throughput ratio: <r>`. Peak memory is the peak of allocated GPU
memory on CUDA, the process's peak resident set on CPU. `--check-syncs` (CUDA) counts the
host syncs the timed steps make, batching included, with `torch.cuda.set_sync_debug_mode` (MASAM reads its dominant
modality once per step; late fusion needs none).
Usage: python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--steps 10] [--batch-size 16]
       [--size 224] [--preset paper] [--methods late_fusion masam] [--check-syncs]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from clinfuse.models.build import build_model
from clinfuse.models.encoders.images import channels_last_
from clinfuse.models.methods import METHODS
from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.data import SplitTensors, held_on_host
from clinfuse.pipeline.inference import autocast
from clinfuse.pipeline.settings.methods import MethodConfig, ModelPreset, method_path, preset_path

MODALITIES = ["ehr", "cxr"]


def synthetic_split(n: int, size: int, device: torch.device) -> SplitTensors:
    """n paired samples: EHR `[n, 48, 24]` (values + 0/1 masks), films uint8 `[n, size, size]`, 25 labels."""
    g = torch.Generator().manual_seed(0)
    ehr = torch.randn(n, 48, 24, generator=g)
    ehr[..., 12:] = (ehr[..., 12:] > 0).float()
    films = torch.randint(0, 256, (n, size, size), generator=g, dtype=torch.uint8)
    inputs = {"ehr": ehr, "cxr": films}
    inputs = {m: x if held_on_host(m, device) else x.to(device) for m, x in inputs.items()}
    present = {m: torch.ones(n, dtype=torch.bool, device=device) for m in MODALITIES}
    y = (torch.rand(n, 25, generator=g) > 0.8).float().to(device)
    return SplitTensors(np.arange(n), inputs, present, y)


def run_one(args, device: torch.device) -> dict:
    """Time `args.warmup` + `args.steps` training steps of one method; its figures as a dict."""
    torch.manual_seed(0)
    encoders = load_section(ModelPreset, preset_path(args.preset)).encoders
    config = load_section(MethodConfig, method_path(args.only)).check(args.only)
    shapes = {"ehr": (48, 24), "cxr": (1, args.size, args.size)}
    model = build_model(encoders, MODALITIES, shapes, 25, method=config.method, task_type="multilabel",
                        options=config.options).to(device)
    model = channels_last_(model, device)  # as the trainer does (NHWC on CUDA only)
    method = METHODS[config.method](model, torch.optim.AdamW(model.parameters(), lr=1e-4), "multilabel",
                                    **config.options)
    split = synthetic_split(args.batch_size * (args.warmup + args.steps), args.size, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    syncs = 0
    start = None
    batches = split.batches(args.batch_size, torch.Generator().manual_seed(0))
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                if args.check_syncs:
                    torch.cuda.set_sync_debug_mode("warn")
            start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batch = next(batches)  # the trainer's batching is part of a step: its syncs count too
            with autocast(device, args.bf16):
                method.step(batch)
        if start is not None:
            syncs += sum("synchronizing" in str(w.message) for w in caught)
    sync()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("default")
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": args.only, "device": str(device), "samples_per_s": args.batch_size * args.steps / seconds,
            "ms_per_step": 1000 * seconds / args.steps, "peak_mib": peak,
            "host_syncs_per_step": syncs / args.steps if args.check_syncs and device.type == "cuda" else None}


def resolve(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        print(f"--device cuda: this PyTorch build sees no CUDA device (torch {torch.__version__}); "
              "use --device cpu or auto", file=sys.stderr)
        raise SystemExit(2)
    return torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--preset", default="paper", help="configs/models/<preset>.yaml")
    parser.add_argument("--methods", nargs="+", default=["late_fusion", "masam"], help="configs/methods/<name>.yaml")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="film size (etl_mimic.cxr_size)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 5 on CUDA)")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="no bf16 autocast on CUDA")
    parser.add_argument("--check-syncs", action="store_true", help="count host syncs per step (CUDA)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process: one method
    parser.add_argument("--result", help=argparse.SUPPRESS)  # child process: where its figures go
    args = parser.parse_args()
    device = resolve(args.device)
    cpu = device.type == "cpu"
    args.steps = args.steps or (3 if cpu else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if cpu else 5)
    torch.set_num_threads(args.threads)
    if args.only:
        Path(args.result).write_text(json.dumps(run_one(args, device)))
        return
    load = os.getloadavg()[0]  # CPU figures on a shared machine depend on it
    print(f"device {device}, torch {torch.__version__}, {args.threads} CPU threads, preset {args.preset}, "
          f"bf16 autocast {'on' if args.bf16 and not cpu else 'off'}, load average {load:.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            result = Path(tmp) / f"{name}.json"
            child = [sys.executable, __file__, "--only", name, "--result", str(result), "--device", str(device.type),
                     "--preset", args.preset, "--batch-size", str(args.batch_size), "--size", str(args.size),
                     "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
            child += ([] if args.bf16 else ["--no-bf16"]) + (["--check-syncs"] if args.check_syncs else [])
            subprocess.run(child, check=True)
            r = json.loads(result.read_text())
            rates[name] = r["samples_per_s"]
            syncs = "" if r["host_syncs_per_step"] is None else f" host_syncs_per_step={r['host_syncs_per_step']:.1f}"
            print(f"{name} device={r['device']} batch={args.batch_size} size={args.size} steps={args.steps} "
                  f"samples_per_s={r['samples_per_s']:.2f} ms_per_step={r['ms_per_step']:.0f} "
                  f"peak_mib={r['peak_mib']:,.0f}{syncs}", flush=True)
    if "late_fusion" in rates and "masam" in rates:
        print(f"masam/late_fusion throughput ratio: {rates['masam'] / rates['late_fusion']:.2f}")


if __name__ == "__main__":
    main()
