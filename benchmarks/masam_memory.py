"""Peak memory of one MASAM step against late fusion, on the paper-size model.

MASAM takes two vector-Jacobian products through every encoder, then runs the dominant
encoder d again at the perturbed point (the reference variant: the whole model). Each
encoder's first-pass activations are freed after its second product, so that pass does
not run on top of them (models/methods/masam.py). This prints the peak memory of each
step as `pipeline.efficiency` measures it (peak tensor memory from building the model through
its first two steps: CUDA max allocated, or on CPU torch's profiler allocation events) and its
ratio to late fusion's; the last line is
  masam (cxr dominant)/late_fusion peak-memory ratio: <r>
The dominant modality and the variant are forced per case, so the worst case is measured
whatever APS would pick; benchmarks/train_throughput.py measures the trainer's loop with
each method's config instead (APS decides).
Measured with an earlier version of this script on CPU (torch 2.13, 2 cores, paper preset, 224 px,
batch 16, each case in its own process, the CPU peak-RSS rise: a coarser figure than today's
tensor count), before and after the activations were freed: image-dominant 3,635 ->
2,515 MiB (ratio to late fusion 1.73 -> 1.31), reference variant 3,865 -> 2,428 MiB,
EHR-dominant 2,166 -> 2,078 MiB. No CUDA figure yet (no GPU was lent when it was written).
Usage: python benchmarks/masam_memory.py [--preset paper] [--size 224] [--batch 16]
       [--device cpu|cuda] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.efficiency import measure_methods, memory_description
from clinfuse.pipeline.settings.methods import ModelPreset, preset_path

CASES = {
    "late_fusion": ("late_fusion", {}),
    "masam (ehr dominant)": ("masam", {"dominant": "ehr"}),
    "masam (cxr dominant)": ("masam", {"dominant": "cxr"}),
    "masam reference (cxr dominant)": ("masam", {"dominant": "cxr", "variant": "reference"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", type=int, default=224, help="chest film side in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    encoders = load_section(ModelPreset, preset_path(args.preset)).encoders
    shapes = {"ehr": (48, 24), "cxr": (1, args.size, args.size)}
    figures = measure_methods(CASES, {m: encoders[m] for m in shapes}, shapes, 25, "multilabel", args.batch,
                              args.repeats, 1, args.device, args.threads)
    late = figures["late_fusion"]["peak_memory_mib"]
    print(f"preset {args.preset}, {args.size} px, batch {args.batch}, device {args.device}; "
          f"memory: {memory_description(args.device)}")
    for label, r in figures.items():
        print(f"{label:32s} peak {r['peak_memory_mib']:8,.0f} MiB  ratio {r['peak_memory_mib'] / late:.2f}  "
              f"step {r['step_ms']['median']:8.1f} ms (median of {r['step_ms']['n']})")
    ratio = figures["masam (cxr dominant)"]["peak_memory_mib"] / late
    print(f"masam (cxr dominant)/late_fusion peak-memory ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
