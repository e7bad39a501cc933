"""A registered clinfuse model as MLflow serves it: the `python_function` flavor.

One MLflow model, two flavors over the same exported program (`data/model.pt2`,
`torch.export` format, pickle-free):

- `pytorch`: `mlflow.pytorch.load_model(uri)` returns the exported module; it takes
  positional tensors in the model card's `argument_order` (for a user who wants the
  torch-native model, e.g. to fine-tune or to compile it).
- `python_function`, loaded by this module: `mlflow.pyfunc.load_model(uri).predict(x)`,
  `mlflow models predict` and `mlflow models serve` take NAMED inputs, a dict
  `{"ehr": [B, 48, 24], "cxr": [B, 1, S, S], "has_ehr": [B], "has_cxr": [B]}` of arrays (the
  model's signature is named tensors; a DataFrame whose cells are arrays is not a supported
  input), and return a DataFrame with one probability column per label; the predict param
  `explain` (true/false, in the signature's params schema) adds each modality's Shapley
  contribution per label (`contribution__<modality>__<label>`).

Inputs are checked before the model runs (`check_inputs`): a NaN or infinite value, a presence
flag other than 0 or 1, a sample with no modality present, or a flag of 0 for a modality the
model never saw missing in training (its model card's `accepts_absent: false`) is refused with
an error naming the input and the row (`mlflow models serve` answers 400 with a JSON error),
never answered with NaN or with an out-of-distribution probability.

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
    card = Path(data_path).parent / "extra_files" / CARD_FILE
    return ServedModel(program, spec["inputs"], {k: tuple(v) for k, v in spec["shapes"].items()}, spec["labels"],
                       absent_refused(json.loads(card.read_text())) if card.is_file() else ())


def invalid_input(message: str) -> Exception:
    """An error that is both a ValueError (for Python callers) and an MlflowException with
    INVALID_PARAMETER_VALUE, which `mlflow models serve` answers with a 400 and a JSON body."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    class InvalidModelInput(MlflowException, ValueError):
        pass

    return InvalidModelInput(message, error_code=INVALID_PARAMETER_VALUE)


CARD_FILE = "metadata.json"  # the model card, stored under extra_files/ (pipeline.registry.CARD_FILE)


def absent_refused(card: dict[str, Any]) -> tuple[str, ...]:
    """Modalities a model card says the model never saw missing in training (`accepts_absent: false`):
    a presence flag of 0 for them is refused."""
    inputs = card.get("network_data_format", {}).get("inputs", {})
    return tuple(name.removeprefix("has_") for name, spec in inputs.items()
                 if name.startswith("has_") and isinstance(spec, dict) and spec.get("accepts_absent") is False)


def check_inputs(named: dict[str, np.ndarray], refused_absent: tuple[str, ...] = (), first_row: int = 0,
                 describe_row=None) -> None:
    """ValueError naming the input and row for what the model cannot score faithfully.

    Args:
        named: input name -> `[B, ...]` array; presence flags are the inputs named `has_<m>`.
        refused_absent: modalities whose flag must be 1 (never missing in training).
        first_row: the row number of `named`'s first sample (batches of a larger input).
        describe_row: row number -> how to name that sample (default "row <n>").

    Refused: NaN or infinite values; presence flags other than exactly 0 or 1; a sample with
    every flag 0 (nothing to predict from); a flag of 0 for a modality in `refused_absent`.
    """
    name_row = describe_row or (lambda i: f"row {i}")
    flags = {n: np.asarray(a) for n, a in named.items() if n.startswith("has_")}
    for name, arr in named.items():
        arr = np.asarray(arr)
        if arr.dtype.kind in "fc":
            finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
            if not finite.all():
                i = int(np.argmin(finite))
                raise ValueError(f"input '{name}': {name_row(first_row + i)} has NaN or infinite values; "
                                 "the model takes finite numbers only")
    for name, arr in flags.items():
        ok = (arr == 0) | (arr == 1)
        if not ok.all():
            i = int(np.argmin(ok))
            raise ValueError(f"input '{name}': {name_row(first_row + i)} is {arr[i].item()!r}; a presence flag is 0 or 1")
    if flags:
        any_present = np.stack([a == 1 for a in flags.values()]).any(axis=0)
        if not any_present.all():
            i = int(np.argmin(any_present))
            raise ValueError(f"{name_row(first_row + i)}: no modality present ({' = '.join(flags)} = 0); "
                             "the model needs at least one input")
    for modality in refused_absent:
        arr = flags.get(f"has_{modality}")
        if arr is not None and (arr == 0).any():
            i = int(np.argmax(arr == 0))
            raise ValueError(f"input 'has_{modality}': {name_row(first_row + i)} is 0, but this model never saw a "
                             f"sample without {modality} in training (model card: accepts_absent false); "
                             f"it predicts only with {modality} present")


class ServedModel:
    """Named inputs in, one probability column per label out (the pyfunc's model implementation).

    Args:
        program: the exported module, `forward(*inputs) -> [B, K]` in `input_names` order.
        input_names: names of the inputs, in the program's argument order.
        shapes: input name -> per-sample shape (e.g. "ehr" -> (48, 24); presence flags ()).
        labels: the K output names.
    """

    def __init__(self, program, input_names: list[str], shapes: dict[str, tuple[int, ...]], labels: list[str],
                 refused_absent: tuple[str, ...] = ()):
        self.program = program
        self.input_names = list(input_names)
        self.shapes = shapes
        self.labels = list(labels)
        self.refused_absent = tuple(refused_absent)  # modalities never missing in training (check_inputs)

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
        try:
            arrays = self.arrays(data)
            check_inputs(dict(zip(self.input_names, arrays, strict=True)), self.refused_absent)
            explain = explain_requested(params)
        except (TypeError, ValueError) as exc:
            raise invalid_input(str(exc)) from None
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        with torch.no_grad():
            probs = self.program(*tensors).float().numpy()
        if not np.isfinite(probs).all():
            i = int(np.argmin(np.isfinite(probs).all(axis=1)))
            raise invalid_input(f"row {i}: the model's probabilities are not finite (inputs far outside the "
                                "training range?); nothing returned")
        out = pd.DataFrame(probs, columns=self.labels)
        if explain:
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
