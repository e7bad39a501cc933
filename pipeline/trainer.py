"""Fit one (cohort, method, seed) run: epochs, early stopping, checkpoints, resume, MLflow.

A run folder `runs/<cohort>/<method>-s<seed>/` holds:
  config.yaml          the resolved config (enough to rebuild the model)
  checkpoint_last.pt   everything needed to resume: model, optimizer, scheduler,
                       method state (MASAM's moving averages), RNG states, history
  checkpoint_best.pt   model weights of the best validation epoch
  history.json         per-epoch metrics
  train_summary.json   best epoch and metric, MLflow run id, timing

A killed run continued with `resume=True` ends with the same parameters and
metrics as an uninterrupted one: shuffling is seeded per epoch, and the RNG
states that dropout uses are saved with every checkpoint. `resume="auto"` (what
`clinfuse train`, hence `dvc repro`, uses) resumes an interrupted run of the same
configuration and starts a changed or already finished one afresh.

Data parallel (torchrun, `train.nproc`; docs/distributed.md): every rank builds the same
model (same seed, then rank 0's copy broadcast), takes its 1/W of each global batch of the
one-process permutation, and steps identically (the method averages over ranks). Rank 0
alone logs to MLflow and writes the run folder; the checkpoint does not depend on W, so a
run resumes on any number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from clinfuse.etl.atomic import MARKER, output_kind, write_json, write_text
from clinfuse.etl.errors import ClinfuseError, ConfigError, InputError
from clinfuse.evaluation.epoch_selection import best_epoch_metrics, still_improving
from clinfuse.evaluation.metrics import headline_metric, task_metrics
from clinfuse.models.build import build_model
from clinfuse.models.distributed import broadcast_buffers_, broadcast_module_, rank, world_size
from clinfuse.models.encoders.images import channels_last_
from clinfuse.models.methods import METHODS
from clinfuse.models.sync_batchnorm import convert_sync_batchnorm

from .alignment import gradient_alignment
from .augment import BatchAugment
from .checkpoints import CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint, save_checkpoint
from .cohort_checks import cohort_warnings
from .data import Cohort, SplitTensors, load_cohort, split_tensors
from .data_parallel import (
    RankSplit,
    barrier,
    first_bad_step,
    from_rank0,
    is_main,
    mean_over_ranks,
    predict_split_parallel,
)
from .inference import autocast, prediction_head
from .label_noise import flip_labels
from .launch import process_device, threads_per_process
from .lineage import cohort_content_digest
from .runs import run_name
from .settings.methods import MethodConfig
from .settings.train import TrainSettings


@dataclass
class RunSpec:
    """Everything that defines a training run."""

    cohort_dir: Path
    method_name: str  # the config name, e.g. "masam" or "masam_reference"
    method: MethodConfig
    preset: str
    encoders: dict[str, dict[str, Any]]
    settings: TrainSettings
    seed: int
    out_dir: Path


class StopTraining(Exception):
    """Raised by a test hook to simulate a killed run (and by a tuning trial's pruner)."""


@dataclass
class TrialHooks:
    """How a tuning trial's run differs from a pipeline run (pipeline/stages/tune.py).

    `tags` are added to the MLflow run (`mlflow.parentRunId` nests it under the study's run);
    `on_epoch(epoch, validation score)` is called after each epoch's checkpoint and may raise a
    `StopTraining` to prune the trial. A trial's run records only the splits it reads: train and val.
    """

    tags: dict[str, str]
    on_epoch: Any  # Callable[[int, float | None], None]


class TrainingDiverged(ClinfuseError):
    """The training loss became NaN or infinite."""


# Settings that may change when a run is resumed: they change where and how fast it runs,
# not what it computes. Anything else differing from the checkpoint's run is refused.
# The number of processes is one of them: the permutation and the global batches do not depend on it.
RESUMABLE_CHANGES = ("cohort", "train.device", "train.num_threads", "train.eval_batch_size", "train.log_every",
                     "train.nproc")


def resolve_device(setting: str) -> torch.device:
    """The device this process trains on (cuda:LOCAL_RANK under torchrun)."""
    return process_device(setting)


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(saved: dict, current: dict) -> None:
    """Refuse to resume a run whose configuration differs in anything but RESUMABLE_CHANGES."""
    a, b = _flat(saved), _flat(current)
    # a setting added after the run started counts as its default (what the run trained with)
    for k, v in _flat({"train": TrainSettings().model_dump()}).items():
        a.setdefault(k, v)
    differ = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)]
    if differ:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differ[:3])
        more = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
        raise ConfigError(f"cannot resume: the run's configuration changed ({shown}{more}); "
                          "resume with the original settings or train into a new --out")


RUN_KIND = "run"  # the marker kind of a run folder (etl.atomic.MARKER)


def recorded_configuration(out: Path, checkpoint: dict) -> dict | None:
    """The configuration the run in `out` was trained with: what its last checkpoint records, else
    (a checkpoint written before checkpoints recorded it) config.yaml when that is a valid mapping;
    None when neither says."""
    saved = checkpoint.get("config")
    if isinstance(saved, dict):
        return saved
    from .config import load_yaml_text

    try:
        saved = load_yaml_text((out / "config.yaml").read_text(encoding="utf-8"), str(out / "config.yaml"))
    except (OSError, UnicodeDecodeError, ClinfuseError):
        return None
    return saved if isinstance(saved, dict) else None


def check_checkpoint_resumable(out: Path, checkpoint: dict, config: dict, cohort_digest: str | None) -> None:
    """ConfigError ("cannot resume: ...") unless `checkpoint` was trained with `config` (check_resumable)
    on a cohort of the same content (`cohort_digest`, when both are known)."""
    saved = recorded_configuration(out, checkpoint)
    if saved is None:
        raise ConfigError(f"cannot resume: {out / CHECKPOINT_LAST} does not record the configuration it was trained "
                          "with and config.yaml is missing or invalid; train into a new --out or use --fresh")
    check_resumable(saved, config)
    recorded = checkpoint.get("cohort_digest")
    if cohort_digest is not None and recorded is not None and recorded != cohort_digest:
        raise ConfigError(f"cannot resume: the cohort {config.get('cohort')} changed since the last checkpoint "
                          f"(content digest {str(recorded)[:12]} -> {cohort_digest[:12]}); "
                          "train into a new --out or use --fresh")


def resume_or_start_afresh(out: Path, config: dict, cohort_dir: Path, track: bool,
                           cohort_digest: str | None = None) -> bool:
    """Decide `resume="auto"`: True to continue the run in `out`, False to start afresh.

    `dvc repro` keeps run folders (`persist: true`) and runs the train stage again when it was
    interrupted or when a dependency changed. So: a run with a last checkpoint, no train summary
    (it did not finish), the same configuration as the one the checkpoint records (never config.yaml,
    which a user may have edited or removed) and a cohort no newer than that checkpoint, of the same
    content, resumes. Anything else starts afresh; a run folder with a checkpoint is then removed
    first, but only one clinfuse wrote (its marker), so a wrong --out is never deleted.
    """
    last = out / CHECKPOINT_LAST
    if not last.is_file():
        return False
    reason = None
    if (out / "train_summary.json").is_file():
        reason = "the run had finished and is trained again"
    elif (Path(cohort_dir) / "manifest.json").stat().st_mtime > last.stat().st_mtime:
        reason = f"the cohort {cohort_dir} was rebuilt after the last checkpoint"
    else:
        try:
            check_checkpoint_resumable(out, load_checkpoint(last), config, cohort_digest)
        except ConfigError as exc:
            reason = str(exc).removeprefix("cannot resume: ").split(";")[0]
    if reason is None:
        print(f"{out}: resuming from {CHECKPOINT_LAST} (same configuration)")
        return True
    if output_kind(out) != RUN_KIND:
        raise InputError(f"{out}: holds a checkpoint but no clinfuse run marker ({MARKER}); "
                         "refusing to replace it (remove it yourself or train into a new --out)")
    run_file = out / "mlflow_run.json"
    if track and run_file.is_file():
        previous = json.loads(run_file.read_text()).get("run_id")
        if previous:
            _mark_interrupted(previous)
    print(f"{out}: {reason}; starting afresh")
    shutil.rmtree(out)
    return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def evaluate_split(model, tensors: SplitTensors, cohort: Cohort, head: str, settings: TrainSettings) -> dict:
    device = next(model.parameters()).device
    probs = predict_split_parallel(model, tensors, cohort.task_type, head, settings.eval_batch_size,
                                   settings.bf16 and device.type == "cuda")
    return task_metrics(cohort.task_type, tensors.y.cpu().numpy(), probs, cohort.label_names)


def check_method_task(method_name: str, method: MethodConfig, cohort: Cohort) -> None:
    """ConfigError naming the method and cohort when the method is undefined for the cohort's task."""
    try:
        METHODS[method.method].check_task(cohort.task_type)
    except ValueError as exc:
        raise ConfigError(f"method {method_name!r} on cohort {cohort.name}: {exc}") from None


def with_cohort_options(spec: RunSpec, cohort: Cohort) -> RunSpec:
    """The spec with its method options resolved for the cohort (e.g. unimodal `modality: image` -> cxr)."""
    try:
        options = METHODS[spec.method.method].cohort_options(spec.method.options, cohort.modalities)
    except ValueError as exc:
        raise ConfigError(f"method config {spec.method_name!r} on cohort {cohort.name}: options: {exc}") from None
    return dataclasses.replace(spec, method=spec.method.model_copy(update={"options": options}))


def build_for_cohort(spec: RunSpec, cohort: Cohort, device: torch.device):
    """Model, optimizer, scheduler and method for a run (deterministic given the seed)."""
    seed_everything(spec.seed)
    check_method_task(spec.method_name, spec.method, cohort)
    shapes = {m: cohort.input_shape(m) for m in cohort.modalities}
    model = build_model(spec.encoders, cohort.modalities, shapes, cohort.num_outputs, method=spec.method.method,
                        task_type=cohort.task_type, options=spec.method.options).to(device)
    model = channels_last_(model, device)  # on CUDA: NHWC 2D convolutions (cuDNN tensor cores); values unchanged
    s = spec.settings
    if s.sync_batchnorm and world_size() > 1:
        model = convert_sync_batchnorm(model, device)  # before the optimizer takes the parameters
    broadcast_module_(model)  # same seed, same model; rank 0's copy makes sure of it
    if s.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    try:
        method = METHODS[spec.method.method](model, optimizer, cohort.task_type, **spec.method.options)
    except ValueError as exc:  # out-of-range options (rho < 0, alpha outside [0, 1], ...)
        raise ConfigError(f"method config {spec.method_name!r}: options: {exc}") from None
    return model, optimizer, scheduler, method


def resolved_config(spec: RunSpec, cohort: Cohort) -> dict[str, Any]:
    return {
        "cohort": str(spec.cohort_dir),
        "cohort_name": cohort.name,
        "dataset": cohort.manifest.dataset,
        "task": cohort.manifest.task,
        "task_type": cohort.task_type,
        "modalities": cohort.modalities,
        "label_names": cohort.label_names,
        "input_shapes": {m: list(cohort.input_shape(m)) for m in cohort.modalities},
        "method_name": spec.method_name,
        "method": {"method": spec.method.method, "options": spec.method.resolved_options()},
        "prediction_head": prediction_head(spec.method),
        "preset": spec.preset,
        "encoders": {m: spec.encoders[m] for m in cohort.modalities},
        "train": spec.settings.model_dump(),
        "seed": spec.seed,
    }


def _rng_states(device: torch.device) -> dict[str, Any]:
    # Only tensors and plain Python values: checkpoints are read back with weights_only=True.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _host(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """A method hook's 0-d tensors as floats (one host sync)."""
    names = list(metrics)
    values = torch.stack([metrics[k].detach().float() for k in names]).tolist() if names else []
    return dict(zip(names, values, strict=True))


def _step_prefix(key: str) -> str:
    """Metrics logged per optimizer step ("step/", "align/") vs per epoch (""): resume dedupes each apart."""
    return key.split("/", 1)[0] + "/" if key.startswith(("step/", "align/")) else ""


class _Tracker:
    """MLflow logging for one run (a no-op when tracking is off).

    Every write goes through `with_retries`: parallel runs (a `dvc queue` with several jobs)
    share one SQLite store, and SQLite answers "database is locked" at once, without waiting
    out its busy timeout, when two writers' transactions deadlock.
    """

    def __init__(self, enabled: bool, experiment: str, run_name: str, run_id: str | None, params: dict):
        self.enabled = enabled
        self.run_id = run_id
        self.logged_upto: dict[str, int] = {}  # metric prefix -> last step already in the store
        if not enabled:
            return
        import mlflow

        from .tracking import flatten, setup_mlflow, with_retries

        self.mlflow = mlflow
        self.retry = with_retries
        experiment_id = setup_mlflow(experiment)
        if run_id:
            self.run = with_retries(lambda: mlflow.start_run(run_id=run_id))
            # A resumed run replays the steps after its last checkpoint: do not log them twice.
            client = mlflow.MlflowClient()
            for key in self.run.data.metrics:
                history = client.get_metric_history(run_id, key)
                prefix = _step_prefix(key)
                if history:
                    self.logged_upto[prefix] = max(self.logged_upto.get(prefix, 0), max(m.step for m in history))
        else:
            self.run = with_retries(lambda: mlflow.start_run(experiment_id=experiment_id, run_name=run_name))
            with_retries(lambda: mlflow.log_params(flatten(params)))
        self.run_id = self.run.info.run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items() if v is not None
                  and step > self.logged_upto.get(_step_prefix(k), 0)}
        if values:
            self.retry(lambda: self.mlflow.log_metrics(values, step=step))

    def summary(self, values: dict[str, float]) -> None:
        """Run-level metrics (no epoch step, never skipped on resume): the selected epoch's `best_*`."""
        if self.enabled and values:
            self.retry(lambda: self.mlflow.log_metrics({k: float(v) for k, v in values.items()}))

    def artifact(self, path: Path, folder: str | None = None) -> None:
        if self.enabled:
            self.mlflow.log_artifact(str(path), artifact_path=folder)

    def tags(self, tags: dict[str, str]) -> None:
        if self.enabled:
            self.retry(lambda: self.mlflow.set_tags(tags))

    def lineage(self, cohort: Cohort, splits: dict[str, np.ndarray], description: str) -> None:
        """The run's description, git commit, DVC stage/experiment and its data splits as dataset inputs."""
        if not self.enabled:
            return
        from .lineage import log_split_inputs
        from .tracking import NOTE_TAG, repo_root, run_context_tags, with_retries

        tags = {NOTE_TAG: description, **run_context_tags()}
        with_retries(lambda: self.mlflow.set_tags(tags))
        with_retries(lambda: log_split_inputs(cohort, splits, repo_root()))

    def curves(self, history: list[dict], title: str) -> None:
        """Loss and validation metric per epoch as a figure (training_curves.png)."""
        if not self.enabled or not history:
            return
        import tempfile

        from clinfuse.evaluation.training_curves import training_curves_png

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "training_curves.png"
            path.write_bytes(training_curves_png(history, title))
            self.mlflow.log_artifact(str(path))

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.retry(lambda: self.mlflow.end_run(status=status))


def _check_finite(first_bad: torch.Tensor, epoch: int, steps_before_epoch: int) -> None:
    bad = first_bad_step(int(first_bad))  # any rank's: every rank stops alike
    if bad >= 0:
        raise TrainingDiverged(f"diverged at epoch {epoch + 1}, step {bad - steps_before_epoch} (global step {bad}): "
                               "the training loss is NaN or infinite; lower train.lr or check the inputs")


def _mark_interrupted(run_id: str) -> None:
    """A run left RUNNING by a killed process is marked KILLED when its folder is trained again."""
    import mlflow

    from .tracking import resolve_tracking_uri, with_retries

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri())
    try:
        if with_retries(lambda: client.get_run(run_id)).info.status == "RUNNING":
            with_retries(lambda: client.set_terminated(run_id, status="KILLED"))
    except mlflow.exceptions.MlflowException:
        pass  # the store was reset or moved: nothing to mark


def _apply_label_noise(train: SplitTensors, cohort: Cohort, rate: float, seed: int) -> int:
    """Flip `rate` of the TRAINING labels in memory (seeded by the run seed); returns the flipped count."""
    if rate <= 0:
        return 0
    noisy, flipped = flip_labels(train.y.cpu().numpy(), rate, cohort.task_type, cohort.num_outputs, seed)
    train.y = torch.from_numpy(noisy).to(train.y.device)
    if is_main():
        print(f"label noise: flipped {flipped} training label entries (rate {rate:g}, seed {seed})")
    return flipped


def _log_alignment(model, train: SplitTensors, task_type: str, batch_size: int, state: dict, tracker) -> None:
    """gamma_m on the fixed probe batch (the first training rows), logged as align/gamma_<m>."""
    probe = train.batch(torch.arange(min(batch_size, len(train)), device=train.y.device))
    gammas = gradient_alignment(model, probe, task_type)
    if not gammas:
        return
    names = list(gammas)
    values = torch.stack([gammas[m].float() for m in names]).tolist()  # one sync per probe
    record = {"step": state["global_step"], **{m: v for m, v in zip(names, values, strict=True)}}
    state.setdefault("alignment", []).append(record)
    tracker.metrics({f"align/gamma_{m}": v for m, v in zip(names, values, strict=True)}, state["global_step"])


def fit(spec: RunSpec, resume: bool | str = False, track: bool = True, stop_after_epoch: int | None = None,
        trial: TrialHooks | None = None) -> dict:
    """Train one run and write its folder; returns the train summary.

    Args:
        spec: the run.
        resume: continue from `checkpoint_last.pt` if present; "auto": continue an interrupted run of
            the same configuration, else start afresh (resume_or_start_afresh).
        track: log to MLflow.
        stop_after_epoch: raise StopTraining after this epoch's checkpoint (tests simulate a kill).
        trial: a tuning trial's MLflow tags and per-epoch callback (None: a pipeline run).
    """
    started = time.perf_counter()
    s = spec.settings
    world = world_size()
    threads = threads_per_process(s.num_threads)
    if threads < s.num_threads and is_main():
        print(f"train.num_threads: {s.num_threads} per process lowered to {threads} "
              "so that the processes on this machine share its cores")
    torch.set_num_threads(threads)
    if s.batch_size % world:
        raise ConfigError(f"train.batch_size: {s.batch_size} is the global batch and must be divisible by "
                          f"the {world} processes (each takes batch_size / {world})")
    device = resolve_device(s.device)
    cohort = load_cohort(spec.cohort_dir)
    spec = with_cohort_options(spec, cohort)
    for warning in cohort_warnings(cohort.samples, cohort.manifest) if is_main() else []:
        print(f"WARNING: cohort {cohort.name}: {warning}", flush=True)
    train, val = split_tensors(cohort, "train", device), split_tensors(cohort, "val", device)
    if len(train) == 0:
        raise InputError(f"{spec.cohort_dir}/samples.parquet: no rows with split == 'train'")
    noise = _apply_label_noise(train, cohort, s.label_noise, spec.seed)
    model, optimizer, scheduler, method = build_for_cohort(spec, cohort, device)
    config = resolved_config(spec, cohort)
    augment = BatchAugment(s.augment, spec.seed, {m: cohort.input_shape(m) for m in cohort.modalities})
    head = config["prediction_head"]
    out = Path(spec.out_dir)
    digest = cohort_content_digest(spec.cohort_dir) if is_main() else None  # recorded with every checkpoint
    if resume == "auto":
        # rank 0 decides (and, starting afresh, removes the old folder) before any rank goes on
        resume = from_rank0(resume_or_start_afresh(out, config, spec.cohort_dir, track, digest) if is_main()
                            else False)
    new_folder = not out.exists() or not any(out.iterdir())
    out.mkdir(parents=True, exist_ok=True)
    if new_folder and is_main():  # marks it as ours: resume_or_start_afresh may remove it later, never a folder we did not make
        write_json(out / MARKER, {"kind": RUN_KIND, "written_by": "clinfuse"})

    state = {"epoch": 0, "global_step": 0, "best_metric": -np.inf, "best_epoch": None, "bad_epochs": 0,
             "history": [], "mlflow_run_id": None, "finished": False}
    last = out / CHECKPOINT_LAST
    if from_rank0(resume and last.exists()):  # rank 0 decides (the run folder is shared across nodes)
        ckpt = load_checkpoint(last, device)
        if is_main():
            check_checkpoint_resumable(out, ckpt, config, digest)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        method.load_state_dict(ckpt["method"])
        state = ckpt["state"]
        _set_rng_states(ckpt["rng"])
    elif is_main():
        for stale in (last, out / CHECKPOINT_BEST, out / "train_summary.json"):
            stale.unlink(missing_ok=True)
    if is_main():
        write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    run_file = out / "mlflow_run.json"  # written at once: a kill before the first checkpoint keeps the id
    previous_run = json.loads(run_file.read_text()).get("run_id") if run_file.is_file() and is_main() else None
    if resume and state["mlflow_run_id"] is None:
        state["mlflow_run_id"] = previous_run  # killed before its first checkpoint: continue that run
    elif track and previous_run and previous_run != state["mlflow_run_id"]:
        _mark_interrupted(previous_run)
    # Rank 0 alone talks to MLflow; the others learn the run id from it.
    tracker = _Tracker(track and is_main(), f"clinfuse/{cohort.name}", run_name(spec.method_name, spec.seed),
                       state["mlflow_run_id"], config)
    tracker.run_id = state["mlflow_run_id"] = from_rank0(tracker.run_id)
    if tracker.run_id and is_main():
        write_json(run_file, {"run_id": tracker.run_id})
    tracker.tags({"cohort": cohort.name, "method": spec.method_name, "seed": str(spec.seed),
                  **(trial.tags if trial else {})})
    splits = ("train", "val") if trial else ("train", "val", "test")
    tracker.lineage(cohort, {split: cohort.rows(split) for split in splits},
                    f"{spec.method_name} on {cohort.name}, seed {spec.seed} (clinfuse train)")
    headline = headline_metric(cohort.task_type)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"), transient=True, disable=not is_main(),
    )
    # Without SyncBatchNorm each rank's BatchNorm statistics come from its shard: rank 0's are
    # copied to every rank after each step, as DistributedDataParallel's broadcast_buffers does.
    share_buffers = world > 1 and not s.sync_batchnorm and any(True for _ in model.buffers())
    # Epoch hooks see the whole split; a pass over it with `.batches` takes this rank's part.
    hook_train = train if world == 1 else RankSplit(train, s.batch_size, rank(), world)
    try:
        with progress:
            steps_per_epoch = (len(train) + s.batch_size - 1) // s.batch_size
            for epoch in range(state["epoch"], s.epochs if not state.get("finished") else state["epoch"]):
                task = progress.add_task(f"{spec.method_name} s{spec.seed} epoch {epoch + 1}/{s.epochs}",
                                         total=steps_per_epoch, info="")
                generator = torch.Generator().manual_seed(spec.seed * 100_003 + epoch)
                sums: dict[str, torch.Tensor] = {}
                n_steps = 0
                # First step whose loss was not finite, kept on the device (read at the syncs we already make).
                first_bad = torch.full((), -1, dtype=torch.long, device=device)
                counts: dict[str, int] = {}  # a method may report a key in some steps only (IGM's loss_<m>)
                epoch_metrics = dict(method.on_epoch_start(epoch, hook_train))
                for batch in train.batches(s.batch_size, generator, rank(), world):
                    batch = augment(batch, state["global_step"])  # the same batch when train.augment is off
                    with autocast(device, s.bf16):
                        metrics = method.step(batch)
                    if share_buffers:
                        broadcast_buffers_(model)
                    n_steps += 1
                    state["global_step"] += 1
                    first_bad = torch.where((first_bad < 0) & ~torch.isfinite(metrics["loss_total"].float()),
                                            state["global_step"], first_bad)
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0) + v.float()
                        counts[k] = counts.get(k, 0) + 1
                    if state["global_step"] % s.log_every == 0:
                        _check_finite(first_bad, epoch, state["global_step"] - n_steps)
                        names = list(metrics)
                        values = torch.stack([metrics[k].float() for k in names]).tolist()  # one sync
                        # the global batch's values: the mean over ranks of each rank's shard
                        step_values = mean_over_ranks(dict(zip(names, values, strict=True)), dict.fromkeys(names, 1))
                        tracker.metrics({f"step/{k}": v for k, v in step_values.items()}, state["global_step"])
                        progress.update(task, info=f"loss {step_values['loss_total']:.3f}")
                    if s.alignment_every and state["global_step"] % s.alignment_every == 0:
                        _log_alignment(model, train, cohort.task_type, s.batch_size, state, tracker)
                    progress.advance(task)
                _check_finite(first_bad, epoch, state["global_step"] - n_steps)
                epoch_metrics.update(method.on_epoch_end(epoch, hook_train))
                epoch_lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trained with, logged as `lr`
                scheduler.step()
                names = list(sums)
                means = torch.stack([sums[k] / counts[k] for k in names]).tolist()  # every epoch has a step
                train_means = dict(zip(names, means, strict=True))
                if world > 1:  # every rank's equal-sized shards: the mean of the ranks' means
                    train_means = mean_over_ranks({k: v * counts[k] for k, v in train_means.items()}, counts)
                hook_metrics = _host(epoch_metrics)  # one sync
                # every rank predicts part of the split; rank 0's metrics decide for all (early stopping)
                val_metrics = from_rank0(evaluate_split(model, val, cohort, head, s) if len(val) else {headline: None})
                score = val_metrics.get(headline)
                record = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_means.items()},
                          f"val_{headline}": score, "lr": epoch_lr,
                          **{f"epoch/{k}": v for k, v in hook_metrics.items()}}
                if val_metrics.get("macro_auroc") is not None:
                    record["val_macro_auroc"] = val_metrics["macro_auroc"]
                state["history"].append(record)
                tracker.metrics({k: v for k, v in record.items() if k != "epoch"}, epoch + 1)
                # A tie is no improvement (the earlier epoch stays). Without a score (no validation rows, or
                # a metric they leave undefined) there is nothing to select on: the latest epoch is kept and
                # the run never stops early. A NaN score is never an improvement; epoch 1 is then kept.
                improved = score is not None and score > state["best_metric"]
                if improved:
                    state["best_metric"] = score
                if improved or score is None or state["best_epoch"] is None:
                    state["best_epoch"] = epoch + 1
                    state["bad_epochs"] = 0
                    if is_main():
                        save_checkpoint({"model": model.state_dict(), "epoch": epoch + 1, "val_metric": score},
                                        out / CHECKPOINT_BEST)
                else:
                    state["bad_epochs"] += 1
                state["epoch"] = epoch + 1
                stop_early = state["bad_epochs"] >= s.patience
                # A finished run (early-stopped or at its last epoch) stays finished on --resume.
                state["finished"] = stop_early or state["epoch"] >= s.epochs
                if is_main():
                    save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "method": method.state_dict(),
                                     "state": state, "rng": _rng_states(device),
                                     # what resume compares with (config.yaml may be edited or lost)
                                     "config": config, "cohort_digest": digest}, last)
                barrier()  # no rank runs ahead of the checkpoint it would resume from
                progress.remove_task(task)
                if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                    raise StopTraining(f"stopped after epoch {epoch + 1}")
                if trial is not None:
                    trial.on_epoch(epoch + 1, score)
                if stop_early:
                    break
    except StopTraining:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")  # never leave an active MLflow run behind
        raise

    main_rank = is_main()
    if main_rank:
        model.load_state_dict(load_checkpoint(out / CHECKPOINT_BEST, device)["model"])
        write_json(out / "history.json", state["history"])
        if state.get("alignment"):
            write_json(out / "alignment.json", state["alignment"])
    best_val_metric = None if state["best_metric"] == -np.inf else state["best_metric"]
    summary = {
        "cohort": cohort.name, "method": spec.method_name, "seed": spec.seed,
        "metric": f"val_{headline}", "best_val_metric": best_val_metric,
        "best_epoch": state["best_epoch"], "epochs_run": state["epoch"], "steps": state["global_step"],
        "mlflow_run_id": tracker.run_id, "seconds": round(time.perf_counter() - started, 2), "device": str(device),
        "label_noise": {"rate": s.label_noise, "flipped_entries": noise}, "processes": world,
        "cohort_digest": digest,  # evaluate refuses a cohort whose content differs
        "still_improving": still_improving(state["best_epoch"], state["epoch"], best_val_metric),
    }
    if main_rank:
        write_json(out / "train_summary.json", summary)
    tracker.metrics({f"best_val_{headline}": summary["best_val_metric"]}, state["epoch"])
    tracker.summary(best_epoch_metrics(state["history"], state["best_epoch"]))  # best_* next to the last epoch's
    tracker.artifact(out / CHECKPOINT_BEST, "checkpoint")
    tracker.artifact(out / "config.yaml")
    tracker.artifact(out / "history.json")
    tracker.curves(state["history"], f"{spec.method_name} on {cohort.name}, seed {spec.seed}")
    if (out / "alignment.json").is_file():
        tracker.artifact(out / "alignment.json")
    tracker.end()
    barrier()  # the run folder is complete when any rank returns
    if not main_rank:
        return summary
    best_txt = ("n/a (no validation score: the last epoch is kept)" if summary["best_val_metric"] is None
                else f"{summary['best_val_metric']:.3f}")
    print(f"trained {spec.method_name} on {cohort.name} (seed {spec.seed}): best val {headline} {best_txt} "
          f"at epoch {summary['best_epoch']}/{state['epoch']}"
          f"{' (still improving at its last epoch: raise train.epochs)' if summary['still_improving'] else ''}"
          f" in {summary['seconds']:.1f} s -> {out}")
    return summary

