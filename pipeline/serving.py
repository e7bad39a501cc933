"""A registered clinfuse model as MLflow serves it: the `python_function` flavor.

One MLflow model, two flavors over the same exported program (`data/model.pt2`,
`torch.export` format, pickle-free):

- `pytorch`: `mlflow.pytorch.load_model(uri)` returns the exported module; it takes
  positional tensors in the model card's `argument_order` (for a user who wants the
  torch-native model, e.g. to fine-tune or to compile it).
- `python_function`, loaded by this module: `mlflow.pyfunc.load_model(uri).predict(x)`,
  `mlflow models predict` and `mlflow models serve` take NAMED inputs, a dict
  `{"ehr": [B, 48, 24], "cxr": [B, 1, S, S], "has_ehr": [B], "has_cxr": [B]}` of arrays, or
  a DataFrame with one column per input whose cells are one sample's array (or that array
  flattened to a list), and return a DataFrame with one probability column per label; the
  predict param `explain` (true/false, in the signature's params schema) adds each modality's
  Shapley contribution per label (`contribution__<modality>__<label>`).

MLflow's own pyfunc for `pytorch` takes one array only, so it is not added for a
multi-input model; a `PythonModel` would be stored as a cloudpickle. Here the MLmodel
file names this module as the pyfunc loader (MLflow's custom-flavor mechanism), and
`data/serving.json` holds the input names, per-sample shapes and label names: loading
reads only our own files and the pt2 archive, which MLflow checks to be free of pickles.

The model is self-contained: the `clinfuse` package this loader belongs to is copied into the
model's `code/` folder (MLflow's `code_paths`, which every flavor puts first on `sys.path` when
loading), and requirements.txt names what that code imports (torch, mlflow, numpy, pandas). So
`mlflow models serve -m models:/<name>@champion` works in an environment with only mlflow and
torch installed, and `mlflow models build-docker` builds an image from the registry alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SERVING_FILE = "serving.json"  # in the model's data/ folder, beside model.pt2
CODE_DIR = "code"  # MLflow's folder for a model's code_paths
SUBPACKAGES = ("pipeline", "etl", "models", "evaluation", "configs")  # clinfuse.<name>, see clinfuse/__init__.py


def stage_package(dest: Path) -> Path:
    """Copy the importable `clinfuse` package into `dest/clinfuse` with its installed layout
    (`clinfuse/pipeline`, `clinfuse/etl`, ...), wherever each subpackage lives (a checkout's top-level
    folders or site-packages); returns that folder. Caches and compiled files are left out."""
    import importlib

    import clinfuse

    root = Path(dest) / "clinfuse"
    root.mkdir(parents=True)
    shutil.copy2(Path(str(clinfuse.__file__)), root / "__init__.py")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for name in SUBPACKAGES:
        module = importlib.import_module(f"clinfuse.{name}")
        shutil.copytree(Path(str(module.__file__)).parent, root / name, ignore=skip)
    return root


def save_model(path: str, mlflow_model=None, *, exportable, example: dict[str, np.ndarray], labels: list[str],
               signature, pip_requirements: list[str], extra_files: list[str] | None = None,
               metadata: dict[str, Any] | None = None) -> None:
    """Save `exportable` with the `pytorch` (pt2) and `python_function` flavors at `path`.

    The flavor entry point of `mlflow.models.Model.log(name=..., flavor=pipeline.serving, ...)`.

    Args:
        path: the new model folder.
        mlflow_model: the `mlflow.models.Model` being logged (MLflow passes it).
        exportable: a module taking one tensor per input, positionally, in `example`'s order
            (see models.export), returning probabilities `[B, K]`.
        example: input name -> a real input example `[B, ...]` (B >= 2 keeps the exported
            batch axis dynamic); saved as the model's input example.
        labels: the K output names, one column each in the pyfunc's predictions.
        signature: the model signature (named TensorSpec inputs).
        pip_requirements: requirements written to requirements.txt / conda.yaml: what the loader imports
            (the clinfuse package itself is copied into the model's `code/`).
        extra_files: files stored under `extra_files/` (the model card).
        metadata: free-form MLmodel metadata.
    """
    import mlflow
    from mlflow.models.utils import _save_example  # what every flavor uses to store its example
    from mlflow.pyfunc import add_to_model

    names = list(example)
    with tempfile.TemporaryDirectory() as tmp:
        package = stage_package(Path(tmp))  # the pyfunc loader's own code travels with the model
        mlflow.pytorch.save_model(exportable, path, mlflow_model=mlflow_model, serialization_format="pt2",
                                  input_example=tuple(example.values()), signature=signature,
                                  pip_requirements=pip_requirements, extra_files=extra_files, metadata=metadata,
                                  code_paths=[str(package)])
    model = mlflow_model if mlflow_model is not None else mlflow.models.Model.load(path)
    # The pytorch flavor stored the positional example; the model's example is the named one.
    for stale in ("input_example.json", "serving_input_example.json"):
        Path(path, stale).unlink(missing_ok=True)
    model.saved_input_example_info = None
    _save_example(model, example, path)
    spec = {"inputs": names, "shapes": {n: list(a.shape[1:]) for n, a in example.items()}, "labels": list(labels)}
    Path(path, "data", SERVING_FILE).write_text(json.dumps(spec, indent=2))
    add_to_model(model, loader_module=__name__, data="data", code=CODE_DIR, conda_env="conda.yaml",
                 python_env="python_env.yaml")
    model.save(str(Path(path) / "MLmodel"))


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> ServedModel:
    """MLflow's pyfunc loader hook: `data_path` is the model's data/ folder."""
    import mlflow

    spec = json.loads(Path(data_path, SERVING_FILE).read_text())
    program = mlflow.pytorch.load_model(str(Path(data_path).parent))  # the pt2 archive, pickle-free
    return ServedModel(program, spec["inputs"], {k: tuple(v) for k, v in spec["shapes"].items()}, spec["labels"])


class ServedModel:
    """Named inputs in, one probability column per label out (the pyfunc's model implementation).

    Args:
        program: the exported module, `forward(*inputs) -> [B, K]` in `input_names` order.
        input_names: names of the inputs, in the program's argument order.
        shapes: input name -> per-sample shape (e.g. "ehr" -> (48, 24); presence flags ()).
        labels: the K output names.
    """

    def __init__(self, program, input_names: list[str], shapes: dict[str, tuple[int, ...]], labels: list[str]):
        self.program = program
        self.input_names = list(input_names)
        self.shapes = shapes
        self.labels = list(labels)

    def get_raw_model(self):
        """The exported torch module (MLflow's accessor for a flavor's underlying model)."""
        return self.program

    def arrays(self, data) -> list[np.ndarray]:
        """`data` (dict of arrays, or a DataFrame of per-sample cells) as float32 `[B, ...]` in argument order."""
        import pandas as pd

        columns = list(data.columns) if isinstance(data, pd.DataFrame) else list(data) if isinstance(data, dict) \
            else None
        if columns is None:
            raise TypeError(f"expected a dict of arrays or a DataFrame with columns {self.input_names}, "
                            f"got {type(data).__name__}")
        missing = [n for n in self.input_names if n not in columns]
        if missing:
            raise ValueError(f"missing input(s) {missing}; the model takes {self.input_names}")
        out = []
        for name in self.input_names:
            value = data[name]
            if isinstance(data, pd.DataFrame):  # one sample per cell (no signature enforcement ran)
                value = np.stack([np.asarray(cell, np.float32).reshape(self.shapes[name]) for cell in value])
            arr = np.asarray(value, dtype=np.float32)
            if arr.shape[1:] != tuple(self.shapes[name]):
                raise ValueError(f"input '{name}' has per-sample shape {list(arr.shape[1:])}; "
                                 f"the model expects {list(self.shapes[name])}")
            out.append(arr)
        sizes = {n: len(a) for n, a in zip(self.input_names, out, strict=True)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inputs disagree on the number of samples: {sizes}")
        return out

    def predict(self, data, params: dict[str, Any] | None = None):
        """Probabilities `[B, K]` as a DataFrame with one column per label, in label order.

        With `params={"explain": True}` (MLflow predict params; `"params": {"explain": true}` in a
        JSON request to `mlflow models predict` / `serve`) it adds, per sample, each modality's exact
        Shapley contribution to each label's probability: columns `contribution__<modality>__<label>`
        (see `explain_columns`).
        """
        import pandas as pd
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in self.arrays(data)]
        with torch.no_grad():
            probs = self.program(*tensors)
        out = pd.DataFrame(probs.float().numpy(), columns=self.labels)
        if explain_requested(params):
            contributions = explain_columns(self.program, self.input_names, tensors, self.labels)
            out = pd.concat([out, contributions], axis=1)
        return out


def explain_requested(params: dict[str, Any] | None) -> bool:
    """The `explain` predict param as a bool; anything but a boolean (or "true"/"false") is refused."""
    value = (params or {}).get("explain", False)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise ValueError(f"predict param 'explain' must be true or false, got {value!r}")


def explain_columns(program, input_names: list[str], tensors: list, labels: list[str]):
    """Each modality's Shapley contribution to each label's probability, one column per (modality, label).

    `program` takes the inputs positionally in `input_names` order: each modality `m` and its
    presence flag `has_m` (1.0 present, 0.0 absent). A modality is made absent as the model
    meets a missing one: zero input and `has_m` = 0 (pipeline.modality_shapley).

    Returns:
        a DataFrame `[B, M * K]`, columns `contribution__<modality>__<label>`.
    """
    import pandas as pd

    from .modality_shapley import modality_shapley

    named = dict(zip(input_names, tensors, strict=True))
    modalities = [n for n in input_names if f"has_{n}" in named]

    def predict(inputs, present):
        return program(*[inputs[n] if n in inputs else present[n[len("has_"):]] for n in input_names])

    phi, _, _ = modality_shapley(predict, {m: named[m] for m in modalities},
                                 {m: named[f"has_{m}"] for m in modalities}, modalities)
    phi = phi.numpy()  # [B, M, K]
    return pd.DataFrame({f"contribution__{m}__{label}": phi[:, j, k] for j, m in enumerate(modalities)
                         for k, label in enumerate(labels)})
