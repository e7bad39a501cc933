"""Load params.yaml and configs/*.yaml into validated, typed settings.

Every default lives on the section models in `pipeline/settings/`; a YAML file
only overrides. An unknown or mistyped key fails with a `ConfigError` that names
the key path and the file, e.g. ``params.yaml: train.epochs: Input should be a
valid integer (got 'ten')``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from clinfuse.etl.errors import ConfigError

from .settings.base import StrictModel
from .settings.paths import PathsSettings

M = TypeVar("M", bound=BaseModel)

ENV_PATH_OVERRIDES = {
    "CLINFUSE_MIMIC_IV": "mimic_iv",
    "CLINFUSE_MIMIC_CXR": "mimic_cxr",
    "CLINFUSE_ADNI": "adni",
}


def _optional_section(module: str, cls: str) -> type[StrictModel] | None:
    """Import a stage's settings model if that stage exists in this checkout."""
    try:
        return getattr(importlib.import_module(f"clinfuse.pipeline.settings.{module}"), cls)
    except ModuleNotFoundError:
        return None


def _build_params_model() -> type[StrictModel]:
    from pydantic import create_model

    fields: dict[str, Any] = {"paths": (PathsSettings, PathsSettings())}
    for key, module, cls in [
        ("synth", "synth", "SynthSettings"),
        ("etl_mimic", "etl_mimic", "MimicEtlSettings"),
        ("etl_adni", "etl_adni", "AdniEtlSettings"),
        ("sweep", "sweep", "SweepSettings"),
        ("train", "train", "TrainSettings"),
        ("evaluate", "evaluate", "EvaluateSettings"),
        ("analyze", "analyze", "AnalyzeSettings"),
        ("registry", "registry", "RegistrySettings"),
        ("tune", "tune", "TuneSettings"),
    ]:
        model = _optional_section(module, cls)
        if model is not None:
            fields[key] = (model, model())
    return create_model("Params", __base__=StrictModel, **fields)


Params = _build_params_model()


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `<file>: <dotted.key>: <message> (got <value>)`."""
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        got = repr(item.get("input"))
        if len(got) > SHOWN_VALUE:  # a huge value (an alias bomb, a pasted array) must not flood the terminal
            got = got[:SHOWN_VALUE] + f"... ({len(got):,} characters)"
        suffix = "" if item["type"] in ("extra_forbidden", "missing") else f" (got {got})"
        lines.append(f"{source}: {key}: {msg}{suffix}")
    return "; ".join(lines)


MAX_YAML_BYTES = 1 << 20  # a params or method file is a few KB; 1 MiB is far beyond any real one
MAX_YAML_NODES = 100_000  # values after expanding aliases: an alias bomb expands to billions
SHOWN_VALUE = 80  # characters of an offending value quoted in an error


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML says keys are unique;
    PyYAML would silently keep the last, so a second `train:` would reset the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader refuses it itself
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(f"line {line}: duplicate key {key!r} (first given at line {first}); "
                                        "each key may appear once")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    pass


def _expanded_size(node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is expanded (memoised per node)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = 1  # a recursive alias counts once while it is being measured
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(v, sizes) for v in node.value)
    else:
        total = 1
    sizes[key] = min(total, MAX_YAML_NODES + 1)
    return sizes[key]


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML strictly: duplicate keys, documents over 1 MiB and alias bombs are ConfigErrors naming `source`."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters; a clinfuse YAML file is at most {MAX_YAML_BYTES:,}")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{source}: its aliases expand to more than {MAX_YAML_NODES:,} values "
                              "(an alias bomb?); refusing to read it")
        return loader.construct_document(node)
    except _DuplicateKey as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a clinfuse config") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping strictly (load_yaml_text); a missing file, a file that is not UTF-8 text
    or a non-mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                          "YAML files are read as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    data = load_yaml_text(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate `data` against `model`, turning pydantic errors into a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_params(path: str | os.PathLike = "params.yaml", *, apply_env: bool = True) -> Any:
    """Load params.yaml (DVC params) into the typed `Params` model.

    A missing params.yaml gives all defaults. With `apply_env`, the
    CLINFUSE_MIMIC_IV / CLINFUSE_MIMIC_CXR / CLINFUSE_ADNI variables override
    the raw-data paths.
    """
    path = Path(path)
    data = read_yaml(path) if path.exists() else {}
    params = validate(Params, data, str(path))
    if apply_env:
        for var, key in ENV_PATH_OVERRIDES.items():
            if os.environ.get(var):
                setattr(params.paths, key, os.environ[var])
    return params


def load_section(model: type[M], path: str | os.PathLike) -> M:
    """Load one YAML file (e.g. configs/methods/masam.yaml) into `model`."""
    return validate(model, read_yaml(path), str(path))
