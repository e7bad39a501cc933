"""Where a training run lives: `<runs>/<cohort>/<method>-s<seed>/`, and its files read back checked.

The folder name is also the run's MLflow run name, and dvc.yaml's `train` stage writes
the same pattern (tests/test_architecture.py checks that they agree). Kept apart from
`pipeline.results` so that the training stage, which needs only this name, does not
re-run when the results I/O changes (DVC deps are whole files).
"""

from __future__ import annotations

from pathlib import Path


def run_name(method: str, seed: int) -> str:
    """`<method>-s<seed>`: the run folder and MLflow run name of one (method, seed) run.

    Args:
        method: the method config name (`clinfuse train --method`, configs/methods/<name>.yaml).
        seed: the run's seed.
    """
    return f"{method}-s{seed}"


def run_dir(runs_root: str | Path, cohort: str, method: str, seed: int) -> Path:
    """`<runs_root>/<cohort>/<method>-s<seed>`: the default folder of one training run."""
    return Path(runs_root) / cohort / run_name(method, seed)


# The files of a finished run folder, read back with their keys checked: a damaged file is one
# line naming it and the key, never a KeyError or a YAML/JSON traceback in a later stage.
RUN_CONFIG = "config.yaml"
TRAIN_SUMMARY = "train_summary.json"
_CONFIG_KEYS = {"cohort": str, "method_name": str, "method": dict, "modalities": list, "input_shapes": dict,
                "label_names": list, "task_type": str, "encoders": dict, "prediction_head": str, "seed": int,
                "train": dict}
# what rebuilding the model needs (pipeline.inference.load_trained_model)
MODEL_KEYS = ("modalities", "input_shapes", "label_names", "task_type", "encoders", "method")
_SUMMARY_KEYS = {"metric": str, "best_val_metric": (float, int, type(None)), "best_epoch": (int, type(None))}


def _check_keys(data: object, keys: dict, path: Path, what: str) -> dict:
    from clinfuse.etl.errors import InputError

    if not isinstance(data, dict):
        raise InputError(f"{path}: expected {what} (a mapping of keys), got {type(data).__name__}")
    for key, kind in keys.items():
        if key not in data:
            raise InputError(f"{path}: missing key '{key}'; expected {what}")
        value = data[key]
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise InputError(f"{path}: {key}: unexpected value {str(repr(value))[:60]}; expected {what}")
    return data


def read_run_config(run_dir: str | Path, keys: tuple[str, ...] | None = None) -> dict:
    """A run's config.yaml (the resolved config `clinfuse train` wrote), its keys checked: all of
    them, or only `keys` (e.g. MODEL_KEYS)."""
    from clinfuse.etl.errors import InputError

    from .config import load_yaml_text

    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise InputError(f"{path}: missing; expected a finished training run folder (clinfuse train)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; expected the config.yaml clinfuse train writes") from None
    wanted = _CONFIG_KEYS if keys is None else {k: _CONFIG_KEYS[k] for k in keys}
    config = _check_keys(load_yaml_text(text, str(path)), wanted, path, "the config.yaml clinfuse train writes")
    if not isinstance(config["method"].get("method"), str) or not isinstance(config["method"].get("options", {}), dict):
        raise InputError(f"{path}: method: expected {{method: <name>, options: {{...}}}}")
    return config


def read_train_summary(run_dir: str | Path) -> dict:
    """A finished run's train_summary.json, its keys checked (missing: the run did not finish)."""
    return read_json_record(Path(run_dir) / TRAIN_SUMMARY, _SUMMARY_KEYS,
                            "the train_summary.json a finished clinfuse train run writes")


def read_json_record(path: Path, keys: dict, what: str) -> dict:
    """A JSON object file the project wrote, with `keys` (name -> type) checked; InputError naming the file."""
    import json

    from clinfuse.etl.errors import InputError

    if not path.is_file():
        raise InputError(f"{path}: missing; expected {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; expected {what}") from None
    except json.JSONDecodeError as exc:
        problem = "empty" if not path.read_bytes().strip() else f"not valid JSON ({exc.msg} at line {exc.lineno})"
        raise InputError(f"{path}: {problem}; expected {what}") from None
    return _check_keys(data, keys, path, what)
