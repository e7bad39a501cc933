"""MLflow model registry: register the best run per task and move `champion`.

Registered names are `<dataset>-<task>` (e.g. `mimic-phenotype`). The alias
`champion` moves to a new version only when it beats the current champion on
the validation metric (registry stages are deprecated; aliases replace them).
Each version carries a model card, `metadata.json`, in the spirit of a MONAI
bundle: inputs with shape, dtype, channel meaning and value range, intended
use, data source, evaluation metrics with CIs and the training config.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.champion import beats_champion

CHAMPION = "champion"
CARD_FILE = "metadata.json"

INTENDED_USE = (
    "Research use only: benchmarking multimodal fusion and optimisation methods on "
    "retrospective ICU (MIMIC-IV/MIMIC-CXR) or Alzheimer's (ADNI) cohorts. Not a medical "
    "device; not validated for clinical decision making. Trained on synthetic data unless "
    "the data source below names a credentialed export."
)


@dataclass(frozen=True)
class Registration:
    """What `register_model` did."""

    name: str
    version: int
    champion_moved: bool
    val_metric: float
    previous_champion_metric: float | None
    model_uri: str


def model_signature(input_names: list[str], example: tuple[np.ndarray, ...], num_outputs: int):
    """TensorSpec signature (required by the `pt2` format) with a dynamic batch axis."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    inputs = Schema(
        [
            TensorSpec(arr.dtype, (-1, *arr.shape[1:]), name)
            for name, arr in zip(input_names, example, strict=True)
        ]
    )
    outputs = Schema([TensorSpec(np.dtype("float32"), (-1, num_outputs), "probabilities")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def champion_metric(client, name: str) -> float | None:
    """Validation metric recorded on the current champion version, or None if none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    value = version.tags.get("val_metric")
    return float(value) if value is not None else None


def _pip_requirements() -> list[str]:
    # Explicit requirements: MLflow's inference imports the model in a subprocess
    # (slow) and would log torch with the local "+cpu" label.
    import mlflow

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy"]


def register_model(
    exportable: torch.nn.Module,
    example: tuple[np.ndarray, ...],
    input_names: list[str],
    card: dict[str, Any],
    name: str,
    val_metric: float,
    run_id: str | None = None,
) -> Registration:
    """Log `exportable` in `pt2` format, register it as `name`, maybe move `champion`.

    Args:
        exportable: a module taking positional tensors (see models.export).
        example: a real input example, one array per input (batch size >= 2, so
            the exported graph keeps a dynamic batch axis).
        input_names: names of the inputs, in order.
        card: the model card; written as `metadata.json` next to the model.
        name: registered model name, `<dataset>-<task>`.
        val_metric: validation metric used to decide the champion (higher is better).
        run_id: MLflow run to attach the model to (the training run), or None for a new run.
    """
    import mlflow

    client = mlflow.MlflowClient()
    exportable = exportable.eval()
    with torch.no_grad():
        out = exportable(*[torch.from_numpy(a) for a in example])
    signature = model_signature(input_names, example, int(out.shape[-1]))
    previous = champion_metric(client, name)

    with tempfile.TemporaryDirectory() as tmp:
        card_path = Path(tmp) / CARD_FILE
        card_path.write_text(json.dumps(card, indent=2, default=str))
        with mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=f"register-{name}"):
            info = mlflow.pytorch.log_model(
                exportable,
                name="model",
                input_example=example,
                signature=signature,
                pip_requirements=_pip_requirements(),
                extra_files=[str(card_path)],
                metadata={"model_card": CARD_FILE, "input_names": input_names},
            )
            mlflow.log_artifact(str(card_path), artifact_path="model_card")
    _ensure_registered_model(client, name)
    mv = client.create_model_version(name=name, source=info.model_uri, run_id=info.run_id)
    version = int(mv.version)
    client.set_model_version_tag(name, str(version), "val_metric", f"{val_metric:.6f}")
    client.set_model_version_tag(name, str(version), "method", str(card.get("training", {}).get("method", "")))
    client.update_model_version(name, str(version), description=_card_summary(card))
    moved = beats_champion(val_metric, previous)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    return Registration(name, version, moved, val_metric, previous, f"models:/{name}/{version}")


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Multimodal fusion model trained by clinfuse; see each version's metadata.json."
        )


def _card_summary(card: dict[str, Any]) -> str:
    ev = card.get("evaluation", {})
    parts = [f"{card.get('task', '')}: {card.get('training', {}).get('method', '')}"]
    for key, val in ev.get("headline", {}).items():
        parts.append(f"{key}={val}")
    return "; ".join(parts)


def download_registered_model(model_uri: str) -> tuple[Path, dict[str, Any]]:
    """Download a registered version (e.g. `models:/mimic-phenotype@champion`) and read its card.

    Returns the local model folder (for `mlflow.pytorch.load_model`) and the parsed metadata.json.
    """
    import mlflow

    from etl.errors import InputError

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except mlflow.exceptions.MlflowException as exc:
        raise InputError(f"{model_uri}: cannot be loaded from {mlflow.get_tracking_uri()} "
                         f"({str(exc).splitlines()[0]})") from None
    card = local / "extra_files" / CARD_FILE
    if not card.is_file():
        raise InputError(f"{model_uri}: has no {CARD_FILE} model card; register it with `clinfuse register`")
    return local, json.loads(card.read_text())
