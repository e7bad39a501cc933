"""Train one fusion model on a processed cohort with a method (late_fusion, sam, masam, ...).

  clinfuse train --cohort data/processed/mimic-phenotype --method masam --seed 42 \
                 --out runs/mimic-phenotype/masam-s42

`--method` names a config in configs/methods/ (e.g. masam, masam_reference,
masam_no_aps); `--config FILE` uses another method YAML. Training settings come
from params.yaml `train:`; `--epochs` and `--device` override them. An interrupted
run in `--out` with the same configuration resumes from its last checkpoint to the
same result as an uninterrupted one (`dvc repro` after a kill); a changed
configuration, a rebuilt cohort or a finished run starts afresh (the old run folder
is removed). `--resume` insists on resuming, `--fresh` on starting afresh.

Several processes (data parallel, one per GPU): `train.nproc: N` in params.yaml or
`--nproc N` starts this command N times under torchrun on this machine; or start it
with torchrun yourself (several machines: docs/distributed.md):

  torchrun --standalone --nproc_per_node 4 -m clinfuse.pipeline train --cohort ... --method masam
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from clinfuse.etl.errors import ConfigError
from clinfuse.pipeline.config import load_params, load_section
from clinfuse.pipeline.runs import run_dir
from clinfuse.pipeline.settings.methods import MethodConfig, ModelPreset, method_path, preset_path
from clinfuse.pipeline.settings.sweep import MAX_SEED

NAME = "train"
HELP = "train a fusion model with a method on a processed cohort (tracked in MLflow)"


def add_arguments(parser) -> None:
    parser.add_argument("--cohort", required=True, help="processed cohort folder (data/processed/<cohort>)")
    parser.add_argument("--method", required=True, help="method config name in configs/methods/ (e.g. masam)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: first of params sweep.seeds)")
    parser.add_argument("--config", default=None, help="method YAML (default: configs/methods/<method>.yaml)")
    parser.add_argument("--tuned", default=None,
                        help="selected configuration written by `clinfuse tune` (<tuning>/<cohort>/<method>/selected.yaml): "
                             "its method options and training settings replace the config's")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<cohort>/<method>-s<seed>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run folder's last checkpoint (fail if its configuration changed)")
    parser.add_argument("--fresh", action="store_true", help="start afresh even if an interrupted run could resume")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="override train.device")
    parser.add_argument("--nproc", type=int, default=None,
                        help="override train.nproc: processes on this machine, started with torchrun")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def tuned_method(path: Path, method_name: str, settings) -> MethodConfig:
    """The method config in `clinfuse tune`'s selected.yaml; its training settings are applied to `settings`."""
    from clinfuse.pipeline.settings.search import SelectedConfig

    selected = load_section(SelectedConfig, path)
    configured = load_section(MethodConfig, method_path(method_name)) if method_path(method_name).is_file() else None
    if configured is not None and configured.method != selected.method:
        raise ConfigError(f"{path}: method: {selected.method!r} was tuned, but --method {method_name} trains "
                          f"{configured.method!r}")
    method = MethodConfig(method=selected.method, options=selected.options).check(str(path))
    for key, value in selected.train.items():
        try:
            setattr(settings, key, value)
        except Exception as exc:  # pydantic names the constraint
            raise ConfigError(f"{path}: train.{key}: {str(exc).splitlines()[-1].strip()}") from None
    return method


def run(args) -> int:
    from clinfuse.pipeline.launch import (
        inside_torchrun,
        launched_world_size,
        process_group,
        relaunch_under_torchrun,
    )

    params = load_params(args.params)
    settings = params.train.model_copy()
    for key in ("epochs", "device", "nproc"):  # command-line overrides get the settings' own checks
        value = getattr(args, key)
        if value is not None:
            try:
                setattr(settings, key, value)
            except ValidationError as err:
                raise ConfigError(f"--{key} {value}: {err.errors()[0]['msg']} (train.{key})") from None
    if args.tuned and args.config:
        raise ConfigError("--tuned and --config: choose one (--tuned already holds the method config)")
    method_file = Path(args.tuned or args.config or method_path(args.method))
    if not method_file.is_file():
        raise ConfigError(
            f"{method_file}: no such method config; available: "
            f"{sorted(p.stem for p in method_file.parent.glob('*.yaml'))}"
        )
    if args.tuned:
        method = tuned_method(method_file, args.method, settings)
    else:
        method = load_section(MethodConfig, method_file).check(str(method_file))
    if args.config and args.method not in (method.method, method_file.stem):
        # The run is named after --method: it must be what the file trains.
        raise ConfigError(f"{method_file}: trains method {method.method!r}, but --method says {args.method!r}; "
                          f"use --method {method_file.stem} (or {method.method})")
    preset = load_section(ModelPreset, preset_path(settings.preset))
    if args.seed is None and not params.sweep.seeds:
        raise ConfigError(f"{args.params}: sweep.seeds is empty; give --seed or list a seed in sweep.seeds")
    seed = args.seed if args.seed is not None else params.sweep.seeds[0]
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed {seed}: expected a seed from 0 to {MAX_SEED}")
    cohort = Path(args.cohort)
    out = Path(args.out) if args.out else run_dir(params.paths.runs, cohort.name, args.method, seed)
    if args.resume and args.fresh:
        raise ConfigError("--resume and --fresh: choose one")
    world = launched_world_size() if inside_torchrun() else settings.nproc
    if settings.batch_size % world:
        raise ConfigError(f"train.batch_size: {settings.batch_size} is the global batch and must be divisible by "
                          f"the {world} processes (each takes batch_size / {world})")
    if settings.nproc > 1 and not inside_torchrun():
        from clinfuse.pipeline.data import load_cohort
        from clinfuse.pipeline.trainer import check_method_task

        # a missing cohort or a method undefined for its task is one line here, not one per process
        check_method_task(args.method, method, load_cohort(cohort))
        return relaunch_under_torchrun(settings.nproc, args.argv)

    from clinfuse.pipeline.trainer import RunSpec, fit

    if not args.no_tracking:  # a damaged or read-only store is refused before the run folder is touched
        from clinfuse.pipeline.tracking import check_store, resolve_tracking_uri

        check_store(resolve_tracking_uri())

    spec = RunSpec(cohort, args.method, method, settings.preset, preset.encoders, settings, seed, out)
    # By default an interrupted run of the same configuration resumes (dvc repro after a kill), and a
    # changed or finished one starts afresh.
    with process_group(settings.device):
        fit(spec, resume=True if args.resume else False if args.fresh else "auto", track=not args.no_tracking)
    return 0
