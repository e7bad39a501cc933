"""Efficiency per method (paper Table 10): step time, inference time per sample, peak memory.

Same model and batch for every method; each method runs in its own process so the
peak-memory figure is its own (CPU: peak RSS rise; CUDA: max allocated). The cohort's
shapes come from a processed cohort folder, the encoders from a model preset.
Usage:
  python benchmarks/efficiency.py --cohort data/processed/mimic-phenotype \
      --methods late_fusion sam masam [--preset small] [--batch 16] [--steps 10] [--device cpu|cuda]
The last lines print one row per method.
"""

from __future__ import annotations

import argparse

import torch

from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.efficiency import measure_methods
from clinfuse.pipeline.settings.methods import MethodConfig, ModelPreset, method_path, preset_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--methods", nargs="+", default=["late_fusion", "sam", "masam"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cohort = load_cohort(args.cohort)
    preset = load_section(ModelPreset, preset_path(args.preset))
    methods = {}
    for name in args.methods:
        cfg = load_section(MethodConfig, method_path(name))
        methods[name] = (cfg.method, cfg.options)
    shapes = {m: cohort.input_shape(m) for m in cohort.modalities}
    res = measure_methods(methods, {m: preset.encoders[m] for m in cohort.modalities}, shapes, cohort.num_outputs,
                          cohort.task_type, args.batch, args.steps, 2, args.device, args.threads)
    print(f"{cohort.name}, preset {args.preset}, batch {args.batch}, device {args.device}")
    for name, r in res.items():
        ratio = f"{r['ratio_to_late_fusion']:.2f}x" if r["ratio_to_late_fusion"] else "n/a"
        print(f"{name:20s} step {r['step_ms']:8.1f} ms ({ratio} late fusion)  inference "
              f"{r['inference_ms_per_sample']:.3f} ms/sample  peak {r['peak_memory_mib']:.0f} MiB ({r['memory_kind']})")


if __name__ == "__main__":
    main()
