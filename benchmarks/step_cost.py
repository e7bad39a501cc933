"""Step time of late_fusion, sam, masam, igm, the balancing baselines, medfuse and drfuse on the same model and batch.

For the paper-size model (EHR transformer d=256 + MONAI ResNet-50 at 224 px, batch 16)
and the small CPU preset, times each method's optimisation step, with MASAM's dominant
modality forced to each modality and left to APS, and prints every ratio to late
fusion and the peak memory (MLA, MMPareto and AUG too: AUG with one extra
classifier active per modality, its cost once boosting has started). MedFuse and DrFuse build their own networks around the
same encoders (DrFuse runs two encoders per modality: shared and distinct), so their
ratios are whole-architecture costs; the batch is fully paired. The last line is the paper-size, image-dominant ratio:
  masam/late_fusion step-time ratio: <r>
Targets: <= 2.8 for that worst case, <= 2.5 averaged as APS decides (paper's code: 9.8x).
IGM trains one modality per step (SAM on it: two forward/backward passes of one encoder):
it is timed with each modality's phase, and its per-step figure is the mean of the two plus
its feature passes (one no-gradient pass per modality per outer iteration).
OGM-GE, AGM and G-Blend get one line each. G-Blend's line is its training step only; its
weight estimation runs once per super-epoch (about M + 1 extra epochs of single-loss
training per epoch of the run, see models/methods/gblend.py), not per step.
PMR runs on the first label as a binary task (it refuses multilabel) and is compared with late
fusion on that binary task; its once-per-epoch prototype pass is not in the step time.
Methods' epoch-start hooks (prototypes, windows, anchors) run once before timing, untimed.
On CUDA each step runs as the trainer runs it: under bf16 autocast (--no-bf16: fp32) with 2D
convolutions channels-last.
Usage: python benchmarks/step_cost.py [--device cpu|cuda] [--quick] [--steps N] [--no-bf16]
(--quick: batch 8 at 160 px for the paper-size model, fewer steps.)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np
import torch

from models.build import build_model
from models.encoders.images import channels_last_
from models.methods import METHODS
from pipeline.data import SplitTensors
from pipeline.inference import autocast

BF16 = True  # bf16 autocast on CUDA, as the trainer runs (train.bf16); --no-bf16 turns it off

PAPER = {"ehr": {"name": "ehr_transformer", "d_model": 256, "nhead": 4, "num_layers": 2, "dropout": 0.2},
         "cxr": {"name": "resnet50", "out_dim": 256}}
SMALL = {"ehr": {"name": "ehr_transformer", "d_model": 32, "nhead": 4, "num_layers": 1, "dropout": 0.1},
         "cxr": {"name": "small_cnn", "channels": [8, 16, 32], "out_dim": 32}}


def make_batch(batch: int, size: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    ehr = torch.randn(batch, 48, 24, generator=g)
    ehr[..., 12:] = (ehr[..., 12:] > 0).float()
    return {"inputs": {"ehr": ehr.to(device), "cxr": torch.rand(batch, 1, size, size, generator=g).to(device)},
            "present": {m: torch.ones(batch, dtype=torch.bool, device=device) for m in ("ehr", "cxr")},
            "y": (torch.rand(batch, 25, generator=g) > 0.8).float().to(device),
            "index": torch.arange(batch, device=device)}  # split positions, as the trainer's batches carry


def as_split(b: dict) -> SplitTensors:
    """The batch as a training split (images uint8 [N, S, S]), for methods' epoch hooks."""
    images = (b["inputs"]["cxr"][:, 0] * 255).round().to(torch.uint8)
    n = len(b["y"])
    return SplitTensors(np.arange(n), {"ehr": b["inputs"]["ehr"], "cxr": images}, b["present"], b["y"])


def time_method(spec, size, batch, device, name, options, warmup, steps, active=None, task_type="multilabel"
                ) -> tuple[float, float]:
    torch.manual_seed(0)
    outputs = 1 if task_type == "binary" else 25
    model = build_model(spec, ["ehr", "cxr"], {"ehr": (48, 24), "cxr": (1, size, size)}, outputs, method=name,
                        task_type=task_type, options=options).to(device)
    if device.type == "cuda":
        channels_last_(model)  # as the trainer does on CUDA
    if name == "aug":
        model.active.fill_(1)  # one extra classifier per modality: the cost once boosting has started
    method = METHODS[name](model, torch.optim.AdamW(model.parameters(), lr=1e-4), task_type, **options)
    b = make_batch(batch, size, device)
    if task_type == "binary":  # PMR needs single-label classes: the first label as a binary task
        b["y"] = b["y"][:, :1].clone()
        b["y"][0], b["y"][1] = 1.0, 0.0  # both classes present, so both prototypes exist
    if active is not None:  # IGM: pin the modality being trained (no phase ends while timing)
        method.active = model.modalities.index(active)
    else:
        method.on_epoch_start(0, as_split(b))  # prototypes (PMR), window and anchor (InfoReg); untimed
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    def step():
        with autocast(device, BF16):
            method.step(b)

    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return statistics.median(times), peak


def time_feature_pass(spec, size, batch, device, warmup, steps) -> float:
    """IGM's pass for Y_j, per mini-batch, summed over the modalities (eval forward, no gradient).

    Each outer iteration runs one such pass per modality over the N training batches while
    taking N optimisation steps, so this is IGM's added cost per step.
    """
    torch.manual_seed(0)
    model = build_model(spec, ["ehr", "cxr"], {"ehr": (48, 24), "cxr": (1, size, size)}, 25, method="igm",
                        task_type="multilabel").to(device).eval()
    b = make_batch(batch, size, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            t = time.perf_counter()
            for m in model.modalities:
                z = model.encode(m, b["inputs"][m]).double()
                torch.outer(z.mean(0), z.mean(0))
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_model(label, spec, size, batch, device, warmup, steps) -> dict:
    igm_inner = {"inner_iters": 10**9}
    cases = [("late_fusion", "late_fusion", {}, None), ("sam", "sam", {"rho": 0.05}, None),
             ("masam (ehr dominant)", "masam", {"dominant": "ehr"}, None),
             ("masam (cxr dominant)", "masam", {"dominant": "cxr"}, None),
             ("masam (APS decides)", "masam", {}, None),
             ("igm (ehr phase)", "igm", igm_inner, "ehr"), ("igm (cxr phase)", "igm", igm_inner, "cxr"),
             ("ogm_ge", "ogm_ge", {}, None), ("agm", "agm", {}, None), ("gblend", "gblend", {}, None),
             ("mla", "mla", {}, None), ("mmpareto", "mmpareto", {}, None),
             ("aug (1 extra/modality)", "aug", {}, None), ("inforeg", "inforeg", {}, None),
             ("late_fusion (binary)", "late_fusion", {}, None, "binary"), ("pmr (binary)", "pmr", {}, None, "binary"),
             ("medfuse (fusion stage)", "medfuse", {"pretrain_epochs": 0}, None), ("drfuse", "drfuse", {}, None)]
    out = {}
    peak_note = "peak GPU memory" if device.type == "cuda" else "process peak RSS"
    for case, name, options, active, *task in cases:
        task_type = task[0] if task else "multilabel"
        t, peak = time_method(spec, size, batch, device, name, options, warmup, steps, active, task_type)
        out[case] = t
        reference = out["late_fusion (binary)"] if task_type == "binary" else out["late_fusion"]
        print(f"{label}: {case:24s} {t * 1000:9.1f} ms/step  ratio {t / reference:.2f}  "
              f"{peak_note} {peak:,.0f} MiB", flush=True)
    passes = time_feature_pass(spec, size, batch, device, warmup, steps)
    out["igm"] = (out["igm (ehr phase)"] + out["igm (cxr phase)"]) / 2 + passes
    print(f"{label}: {'igm feature passes':22s} {passes * 1000:9.1f} ms/step", flush=True)
    print(f"{label}: {'igm (outer iteration)':22s} {out['igm'] * 1000:9.1f} ms/step  ratio "
          f"{out['igm'] / out['late_fusion']:.2f}  (mean of the phases + feature passes)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="no bf16 autocast on CUDA")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"--device cuda: this PyTorch build sees no CUDA device (torch {torch.__version__}); use --device cpu",
              file=sys.stderr)
        raise SystemExit(2)
    device = torch.device(args.device)
    global BF16
    BF16 = args.bf16
    cpu = device.type == "cpu"
    steps = args.steps or (3 if cpu else 20)
    warmup = 1 if cpu else 5
    size, batch = (160, 8) if args.quick else (224, 16)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          f"{', bf16 autocast' if BF16 and device.type == 'cuda' else ''}", flush=True)
    small = run_model("small preset (64 px, batch 32)", SMALL, 64, 32, device, warmup, steps * 3)
    paper = run_model(f"paper size ({size} px, batch {batch})", PAPER, size, batch, device, warmup, steps)
    for label, r in (("small preset", small), ("paper size", paper)):
        print(f"{label}: " + ", ".join(f"{name}/late_fusion {r[case] / r['late_fusion']:.2f}" for name, case in
                                        (("ogm_ge", "ogm_ge"), ("agm", "agm"), ("gblend", "gblend"), ("mla", "mla"),
                                         ("mmpareto", "mmpareto"), ("aug", "aug (1 extra/modality)"),
                                         ("inforeg", "inforeg")))
              + f", pmr/late_fusion (binary) {r['pmr (binary)'] / r['late_fusion (binary)']:.2f}")
        print(f"{label}: medfuse/late_fusion {r['medfuse (fusion stage)'] / r['late_fusion']:.2f}; "
              f"drfuse/late_fusion {r['drfuse'] / r['late_fusion']:.2f}")
        aps = r["masam (APS decides)"] / r["late_fusion"]
        forced = (r["masam (ehr dominant)"] + r["masam (cxr dominant)"]) / 2 / r["late_fusion"]
        print(f"{label}: medfuse/late_fusion {r['medfuse (fusion stage)'] / r['late_fusion']:.2f}; "
              f"drfuse/late_fusion {r['drfuse'] / r['late_fusion']:.2f}")
        print(f"{label}: sam/late_fusion {r['sam'] / r['late_fusion']:.2f}; masam/late_fusion "
              f"ehr-dominant {r['masam (ehr dominant)'] / r['late_fusion']:.2f}, "
              f"cxr-dominant {r['masam (cxr dominant)'] / r['late_fusion']:.2f}, APS {aps:.2f}, "
              f"mean of forced {forced:.2f}; igm/late_fusion {r['igm'] / r['late_fusion']:.2f}")
    print(f"masam/late_fusion step-time ratio: {paper['masam (cxr dominant)'] / paper['late_fusion']:.2f}")


if __name__ == "__main__":
    main()
