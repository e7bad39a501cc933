"""Efficiency per method (paper Table 10): step time, inference time per sample, peak memory.

Same model and batch for every method, one after another in this process (pipeline/efficiency.py):
times are the median [interquartile range] of --repeats timed calls after --warmup untimed ones
(CPU time of the process on CPU, wall clock on CUDA; --clock to choose);
memory is each method's peak tensor memory (CPU: torch profiler allocation events; CUDA:
torch.cuda.max_memory_allocated), not the process's resident size. The cohort's shapes come
from a processed cohort folder, the encoders from a model preset.
Usage:
  python benchmarks/efficiency.py --cohort data/processed/mimic-phenotype \
      --methods late_fusion sam masam [--preset small] [--batch 16] [--repeats 20] [--device cpu|cuda]
The last lines print one row per method.
"""

from __future__ import annotations

import argparse

import torch

from clinfuse.evaluation.efficiency import CLOCKS
from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.efficiency import default_clock, measure_methods, memory_description
from clinfuse.pipeline.settings.methods import MethodConfig, ModelPreset, method_path, preset_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--methods", nargs="+", default=["late_fusion", "sam", "masam"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                        help="cpu: process CPU time (default on CPU), wall: wall clock (default on CUDA)")
    args = parser.parse_args()
    cohort = load_cohort(args.cohort)
    preset = load_section(ModelPreset, preset_path(args.preset))
    methods = {}
    for name in args.methods:
        cfg = load_section(MethodConfig, method_path(name))
        methods[name] = (cfg.method, cfg.options)
    shapes = {m: cohort.input_shape(m) for m in cohort.modalities}
    clock = args.clock or default_clock(args.device)
    res = measure_methods(methods, {m: preset.encoders[m] for m in cohort.modalities}, shapes, cohort.num_outputs,
                          cohort.task_type, args.batch, args.repeats, args.warmup, args.device, args.threads, clock)
    print(f"{cohort.name}, preset {args.preset}, batch {args.batch}, device {args.device}, "
          f"median [IQR] of {args.repeats} after {args.warmup} warm-up, {clock} clock; "
          f"memory: {memory_description(args.device)}")
    for name, r in res.items():
        ratio = f"{r['ratio_to_late_fusion']:.2f}x" if r["ratio_to_late_fusion"] else "n/a"
        step, inf = r["step_ms"], r["inference_ms_per_sample"]
        print(f"{name:20s} step {step['median']:8.1f} [{step['q1']:.1f}-{step['q3']:.1f}] ms ({ratio} late fusion)  "
              f"inference {inf['median']:.3f} [{inf['q1']:.3f}-{inf['q3']:.3f}] ms/sample  "
              f"peak {r['peak_memory_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
