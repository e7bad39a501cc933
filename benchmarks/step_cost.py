"""Step time of late_fusion, sam, masam, igm, the balancing baselines, medfuse and drfuse on the same model and batch.

For the paper-size model (configs/models/paper.yaml: EHR transformer + MONAI ResNet-50, at 224 px, batch 16)
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
MASAM's g_fuse,m and g_uni,m are two vector-Jacobian products through encoder m. `--vjp`
also times them taken separately (what `models/methods/masam.py` does) against one batched
VJP (`torch.autograd.grad(..., is_grads_batched=True)` with the two cotangents stacked) on
the paper-size encoders, and prints the ratio batched/separate. On CPU (torch 2.13, 2 cores)
the batched form was no faster (paper size, 160 px, batch 8: 42.4 s vs 34.5 s, and 36.0 s as
one call over both encoders, on a heavily shared machine), so MASAM keeps the separate
products. On CUDA (H100, torch 2.11, bf16) the batched form was faster (29.3 ms separate, 22.8 ms
batched, ratio 0.78); MASAM still takes them separately (the same code on every device).
Usage: python benchmarks/step_cost.py [--device cpu|cuda] [--quick] [--steps N] [--no-bf16] [--methods a,b] [--vjp]
(--quick: batch 8 at 160 px for the paper-size model, fewer steps; --methods: time only these
methods, late fusion always included.)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np
import torch

from clinfuse.models.build import build_model
from clinfuse.models.encoders.images import channels_last_
from clinfuse.models.losses import task_loss
from clinfuse.models.methods import METHODS
from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.data import SplitTensors
from clinfuse.pipeline.inference import autocast
from clinfuse.pipeline.settings.methods import ModelPreset, preset_path
from clinfuse.pipeline.settings.train import TrainSettings

BF16 = TrainSettings().bf16  # bf16 autocast on CUDA, as the trainer runs by default (train.bf16); --no-bf16 turns it off

# The encoders training builds (configs/models/<preset>.yaml, read as `clinfuse train` reads them).
PAPER = load_section(ModelPreset, preset_path("paper")).encoders
SMALL = load_section(ModelPreset, preset_path("small")).encoders


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
    model = channels_last_(model, device)  # as the trainer does (NHWC on CUDA only)
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


def time_vjp_forms(spec, size, batch, device, warmup, steps) -> tuple[float, float]:
    """MASAM's per-encoder g_fuse,m and g_uni,m: (separate VJPs, one batched VJP) seconds, summed over encoders."""
    torch.manual_seed(0)
    model = build_model(spec, ["ehr", "cxr"], {"ehr": (48, 24), "cxr": (1, size, size)}, 25, method="masam",
                        task_type="multilabel").to(device).train()
    b = make_batch(batch, size, device)
    mods = model.modalities
    params = {m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in mods}
    feats = {m: model.encode(m, b["inputs"][m]) for m in mods}
    out = model.heads(feats, b["present"])
    dz_fuse = torch.autograd.grad(task_loss(out.fused, b["y"], "multilabel"), [feats[m] for m in mods],
                                  retain_graph=True)
    dz_uni = [torch.autograd.grad(task_loss(out.unimodal[m], b["y"], "multilabel"), feats[m], retain_graph=True)[0]
              for m in mods]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def separate():
        for i, m in enumerate(mods):
            torch.autograd.grad(feats[m], params[m], dz_fuse[i], retain_graph=True)
            torch.autograd.grad(feats[m], params[m], dz_uni[i], retain_graph=True)

    def batched():
        for i, m in enumerate(mods):
            torch.autograd.grad(feats[m], params[m], torch.stack([dz_fuse[i], dz_uni[i]]), retain_graph=True,
                                is_grads_batched=True)

    result = []
    for fn in (separate, batched):
        times = []
        for i in range(warmup + steps):
            t = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t)
        result.append(statistics.median(times))
    return result[0], result[1]


def run_model(label, spec, size, batch, device, warmup, steps, methods=None) -> dict:
    igm_inner = {"inner_iters": 10**9}
    cases = [("late_fusion", "late_fusion", {}, None), ("sam", "sam", {}, None),
             ("masam (ehr dominant)", "masam", {"dominant": "ehr"}, None),
             ("masam (cxr dominant)", "masam", {"dominant": "cxr"}, None),
             ("masam (APS decides)", "masam", {}, None),
             ("igm (ehr phase)", "igm", igm_inner, "ehr"), ("igm (cxr phase)", "igm", igm_inner, "cxr"),
             ("ogm_ge", "ogm_ge", {}, None), ("agm", "agm", {}, None), ("gblend", "gblend", {}, None),
             ("mla", "mla", {}, None), ("mmpareto", "mmpareto", {}, None),
             ("aug (1 extra/modality)", "aug", {}, None), ("inforeg", "inforeg", {}, None),
             ("late_fusion (binary)", "late_fusion", {}, None, "binary"), ("pmr (binary)", "pmr", {}, None, "binary"),
             ("medfuse (fusion stage)", "medfuse", {"pretrain_epochs": 0}, None), ("drfuse", "drfuse", {}, None)]
    if methods is not None:
        keep = methods | {"late_fusion"}
        cases = [c for c in cases if c[1] in keep and (c[0] != "late_fusion (binary)" or "pmr" in methods)]
    out = {}
    peak_note = "peak GPU memory" if device.type == "cuda" else "process peak RSS"
    for case, name, options, active, *task in cases:
        task_type = task[0] if task else "multilabel"
        t, peak = time_method(spec, size, batch, device, name, options, warmup, steps, active, task_type)
        out[case] = t
        reference = out["late_fusion (binary)"] if task_type == "binary" else out["late_fusion"]
        print(f"{label}: {case:24s} {t * 1000:9.1f} ms/step  ratio {t / reference:.2f}  "
              f"{peak_note} {peak:,.0f} MiB", flush=True)
    if "igm (ehr phase)" not in out:
        return out
    passes = time_feature_pass(spec, size, batch, device, warmup, steps)
    out["igm"] = (out["igm (ehr phase)"] + out["igm (cxr phase)"]) / 2 + passes
    print(f"{label}: {'igm feature passes':22s} {passes * 1000:9.1f} ms/step", flush=True)
    print(f"{label}: {'igm (outer iteration)':22s} {out['igm'] * 1000:9.1f} ms/step  ratio "
          f"{out['igm'] / out['late_fusion']:.2f}  (mean of the phases + feature passes)", flush=True)
    return out


def print_summary(label: str, r: dict) -> None:
    """Ratios to late fusion of the methods timed (a method not timed is left out)."""

    def ratio(case: str, reference: str = "late_fusion") -> str:
        return f"{r[case] / r[reference]:.2f}"

    pairs = [("ogm_ge", "ogm_ge"), ("agm", "agm"), ("gblend", "gblend"), ("mla", "mla"), ("mmpareto", "mmpareto"),
             ("aug", "aug (1 extra/modality)"), ("inforeg", "inforeg"), ("medfuse", "medfuse (fusion stage)"),
             ("drfuse", "drfuse"), ("sam", "sam"), ("igm", "igm")]
    parts = [f"{name}/late_fusion {ratio(case)}" for name, case in pairs if case in r]
    if "pmr (binary)" in r:
        parts.append(f"pmr/late_fusion (binary) {ratio('pmr (binary)', 'late_fusion (binary)')}")
    if "masam (APS decides)" in r:
        forced = (r["masam (ehr dominant)"] + r["masam (cxr dominant)"]) / 2 / r["late_fusion"]
        parts.append(f"masam/late_fusion ehr-dominant {ratio('masam (ehr dominant)')}, "
                     f"cxr-dominant {ratio('masam (cxr dominant)')}, APS {ratio('masam (APS decides)')}, "
                     f"mean of forced {forced:.2f}")
    print(f"{label}: " + "; ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="no bf16 autocast on CUDA")
    parser.add_argument("--methods", default=None, help="comma-separated METHODS keys to time (late_fusion always)")
    parser.add_argument("--vjp", action="store_true", help="also time MASAM's encoder VJPs, separate vs batched")
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
    methods = None if args.methods is None else set(args.methods.split(","))
    unknown = (methods or set()) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)}; known: {sorted(METHODS)}")
    small = run_model("small preset (64 px, batch 32)", SMALL, 64, 32, device, warmup, steps * 3, methods)
    paper = run_model(f"paper size ({size} px, batch {batch})", PAPER, size, batch, device, warmup, steps, methods)
    for label, r in (("small preset", small), ("paper size", paper)):
        print_summary(label, r)
    if args.vjp:
        separate, batched = time_vjp_forms(PAPER, size, batch, device, warmup, steps)
        print(f"paper size: masam encoder VJPs separate {separate * 1000:.1f} ms, batched {batched * 1000:.1f} ms, "
              f"batched/separate {batched / separate:.2f}")
    if "masam (cxr dominant)" in paper:
        print(f"masam/late_fusion step-time ratio: {paper['masam (cxr dominant)'] / paper['late_fusion']:.2f}")


if __name__ == "__main__":
    main()
