"""Train one fusion model on a processed cohort with a method (late_fusion, sam, masam, ...).

  clinfuse train --cohort data/processed/mimic-phenotype --method masam --seed 42 \
                 --out runs/mimic-phenotype/masam-s42

`--method` names a config in configs/methods/ (e.g. masam, masam_reference,
masam_no_aps); `--config FILE` uses another method YAML. Training settings come
from params.yaml `train:`; `--epochs` and `--device` override them. `--resume`
continues a killed run from its last checkpoint to the same result.
"""

from __future__ import annotations

from pathlib import Path

from etl.errors import ConfigError
from pipeline.config import load_params, load_section
from pipeline.runs import run_dir
from pipeline.settings.methods import MethodConfig, ModelPreset, method_path, preset_path

NAME = "train"
HELP = "train a fusion model with a method on a processed cohort (tracked in MLflow)"


def add_arguments(parser) -> None:
    parser.add_argument("--cohort", required=True, help="processed cohort folder (data/processed/<cohort>)")
    parser.add_argument("--method", required=True, help="method config name in configs/methods/ (e.g. masam)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: first of params sweep.seeds)")
    parser.add_argument("--config", default=None, help="method YAML (default: configs/methods/<method>.yaml)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<cohort>/<method>-s<seed>)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="override train.device")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def run(args) -> int:
    from pipeline.trainer import RunSpec, fit

    params = load_params(args.params)
    settings = params.train.model_copy()
    if args.epochs is not None:
        settings.epochs = args.epochs
    if args.device is not None:
        settings.device = args.device
    method_file = Path(args.config) if args.config else method_path(args.method)
    if not method_file.is_file():
        raise ConfigError(
            f"{method_file}: no such method config; available: "
            f"{sorted(p.stem for p in method_file.parent.glob('*.yaml'))}"
        )
    method = load_section(MethodConfig, method_file).check(str(method_file))
    if args.config and args.method not in (method.method, method_file.stem):
        # The run is named after --method: it must be what the file trains.
        raise ConfigError(f"{method_file}: trains method {method.method!r}, but --method says {args.method!r}; "
                          f"use --method {method_file.stem} (or {method.method})")
    preset = load_section(ModelPreset, preset_path(settings.preset))
    seed = args.seed if args.seed is not None else params.sweep.seeds[0]
    cohort = Path(args.cohort)
    out = Path(args.out) if args.out else run_dir(params.paths.runs, cohort.name, args.method, seed)
    spec = RunSpec(cohort, args.method, method, settings.preset, preset.encoders, settings, seed, out)
    fit(spec, resume=args.resume, track=not args.no_tracking)
    return 0
