"""Tune one method on one cohort: trials train on the train split and are scored on the validation
split (never test); the best configuration goes to `<tuning>/<cohort>/<method>/selected.yaml`, which
`clinfuse train --tuned` (hence `dvc repro`) trains with.

  clinfuse tune --cohort data/processed/mimic-phenotype --method masam

The search space is configs/search/<method>.yaml; the budget, sampler (grid or TPE), pruner and
storage are params.yaml `tune:` (`--budget`, `--sampler`, `--storage` override them). `tune.budget: 0`
runs no trial and writes the method config as it is.

More workers join the same study with the same command and `--worker` (they run trials and leave;
the process without `--worker` waits for every trial and writes the selection). On one machine
the default SQLite storage is shared; across machines give every worker the same `--storage`
(a PostgreSQL or MySQL URL) and `MLFLOW_TRACKING_URI`. docs/tuning.md has the commands.
"""

from __future__ import annotations

from pathlib import Path

from clinfuse.etl.errors import ConfigError
from clinfuse.pipeline.config import load_params, load_section

NAME = "tune"
HELP = "tune a method's hyperparameters on the validation split (Optuna study; equal budget per method)"


def add_arguments(parser) -> None:
    parser.add_argument("--cohort", required=True, help="processed cohort folder (data/processed/<cohort>)")
    parser.add_argument("--method", required=True, help="method config name in configs/methods/ (e.g. masam)")
    parser.add_argument("--search", default=None, help="search space YAML (default: configs/search/<method>.yaml)")
    parser.add_argument("--out", default=None, help="study folder (default: <paths.tuning>/<cohort>/<method>)")
    parser.add_argument("--budget", type=int, default=None, help="override tune.budget (trials)")
    parser.add_argument("--sampler", choices=["grid", "tpe"], default=None, help="override tune.sampler")
    parser.add_argument("--storage", default=None, help="override tune.storage (an RDB URL shared by workers)")
    parser.add_argument("--worker", action="store_true",
                        help="join the study, run trials while any is left, then leave without writing the selection")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def build_study(args, params):
    """The `Study` the arguments and params.yaml describe (every file validated, errors name the key).

    With `tune.budget: 0` no trial runs, and neither torch nor the cohort is loaded (nine such stages run
    in `make demo`): the files are validated as YAML schemas here, and the method's options by
    `clinfuse train` when it reads selected.yaml.
    """
    from clinfuse.pipeline.settings.methods import MethodConfig, ModelPreset, method_path, preset_path
    from clinfuse.pipeline.settings.search import SearchSpace, search_path
    from clinfuse.pipeline.stages.tune import Study

    settings = params.tune.model_copy()
    for key in ("budget", "sampler", "storage"):
        value = getattr(args, key)
        if value is not None:
            if key == "budget" and value < 0:
                raise ConfigError(f"--budget {value}: expected a number of trials >= 0")
            setattr(settings, key, value)
    method_file = method_path(args.method)
    if not method_file.is_file():
        raise ConfigError(f"{method_file}: no such method config; available: "
                          f"{sorted(p.stem for p in method_file.parent.glob('*.yaml'))}")
    method = load_section(MethodConfig, method_file)
    space_file = Path(args.search) if args.search else search_path(args.method)
    if not space_file.is_file():
        raise ConfigError(f"{space_file}: no search space for method config {args.method!r} "
                          f"(expected configs/search/{args.method}.yaml)")
    space = load_section(SearchSpace, space_file)
    train = params.train.model_copy()
    if settings.epochs is not None:
        train.epochs = settings.epochs
    preset = load_section(ModelPreset, preset_path(train.preset))
    cohort_dir = Path(args.cohort)
    folder = Path(args.out) if args.out else Path(params.paths.tuning) / cohort_dir.name / args.method
    task_type = None
    if settings.budget > 0:
        from clinfuse.pipeline.data import load_cohort
        from clinfuse.pipeline.trainer import check_method_task

        method.check(str(method_file))
        space.check(str(space_file), method.method, method.options)
        cohort = load_cohort(cohort_dir)
        check_method_task(args.method, method, cohort)
        task_type = cohort.task_type
    elif not (cohort_dir / "manifest.json").is_file():
        from clinfuse.etl.errors import InputError

        raise InputError(f"{cohort_dir / 'manifest.json'}: missing; expected a processed cohort folder")
    shown = str(space_file) if args.search else f"configs/search/{args.method}.yaml"
    return Study(cohort_dir, cohort_dir.name, task_type, args.method, method, space, shown,
                 settings, train, train.preset, preset.encoders, params.sweep.seeds[0], folder)


def run(args) -> int:
    from clinfuse.pipeline.stages.tune import finish, work, write_untuned

    params = load_params(args.params)
    study = build_study(args, params)
    if study.settings.budget == 0:
        if not args.worker:
            print(write_untuned(study))
        return 0
    track = not args.no_tracking
    optuna_study, ran = work(study, track=track, wait=not args.worker)
    if args.worker:
        print(f"tune worker {study.cohort_name}/{study.method_name}: ran {ran} trials of study "
              f"{optuna_study.study_name}")
        return 0
    print(finish(study, optuna_study, track))
    return 0
