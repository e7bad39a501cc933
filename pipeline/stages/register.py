"""Register a cohort's champion run (best validation metric) in the MLflow model registry.

The name is `<dataset>-<task>`; the version gets a model card (metadata.json) and the
alias `champion` moves to it only if it beats the current champion on validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from etl.atomic import read_json, write_json
from evaluation.champion import champion_of
from models.export import ExportableFusion
from pipeline.data import IMAGE_MODALITIES, load_cohort, split_tensors
from pipeline.inference import load_trained_model
from pipeline.manifest import shareable_sources
from pipeline.registry import INTENDED_USE, SYNTHETIC_USE, register_model
from pipeline.results import load_evaluations

INPUT_DESCRIPTIONS = {
    "ehr": "hourly EHR, first 48 h of the ICU stay: 12 variables z-scored with training statistics "
           "(forward filled, then training median) followed by their 12 observation masks (0/1)",
    "cxr": "latest AP chest radiograph in the first 48 h, grayscale, shorter side resized and centre cropped, "
           "scaled to [0, 1]",
    "tabular": "ADNIMERGE baseline features: z-scored numeric values, missing-value and censoring indicators, "
               "one-hot categories (training statistics)",
    "mri": "T1 MRI, RAS, isotropic resampling, 0.5-99.5 percentile intensity scaling to [0, 1], cubic crop/resize",
}


def example_inputs(cohort, rows: int) -> tuple[list[str], tuple[np.ndarray, ...]]:
    """A real input example: the first `rows` validation samples, in ExportableFusion's argument order."""
    t = split_tensors(cohort, "val" if (cohort.samples["split"] == "val").sum() >= rows else "train")
    batch = t.batch(np.arange(min(rows, len(t))))
    names = list(cohort.modalities) + [f"has_{m}" for m in cohort.modalities]
    arrays = [batch["inputs"][m].numpy().astype(np.float32) for m in cohort.modalities]
    arrays += [batch["present"][m].numpy().astype(np.float32) for m in cohort.modalities]
    return names, tuple(arrays)


def registered_name(manifest: dict) -> str:
    """`<dataset>-<task>`, with `-partial` for a cohort that admits stays without the image
    (a partially paired model is a different model: its champion is kept apart)."""
    partial = manifest.get("config", {}).get("require_cxr") is False
    return f"{manifest.get('dataset')}-{manifest.get('task')}" + ("-partial" if partial else "")


def model_card(cohort, config: dict, evaluation: dict, example: tuple[np.ndarray, ...], names: list[str]) -> dict:
    """A MONAI-bundle-style description of the inputs, outputs, data, metrics and training."""
    m = cohort.manifest
    inputs = {}
    for name, arr in zip(names, example, strict=True):
        modality = name.removeprefix("has_")
        if name.startswith("has_"):
            inputs[name] = {"type": "presence flag", "shape": [-1], "dtype": "float32", "value_range": [0, 1],
                            "meaning": f"1 if the {modality} input of the sample is present, else 0 (input ignored)"}
            continue
        entry = {"type": "image" if name in IMAGE_MODALITIES else "tensor", "shape": [-1, *arr.shape[1:]],
                 "dtype": "float32", "description": INPUT_DESCRIPTIONS.get(name, "")}
        if name in IMAGE_MODALITIES:
            entry["value_range"] = [0, 1]
        if name == "ehr":
            entry["channel_def"] = dict(enumerate(m.get("ehr_channels", [])))
        if name == "tabular":
            entry["channel_def"] = dict(enumerate(m.get("tabular_features", [])))
        inputs[name] = entry
    headline = evaluation["test"]["headline"]
    return {
        "schema": "clinfuse model card v1 (in the spirit of a MONAI bundle metadata.json)",
        "name": registered_name(m), "task": m.get("task"), "dataset": m.get("dataset"),
        "task_type": cohort.task_type,
        # from the cohort manifest: True = trained on the generator's synthetic exports, None = not recorded
        "synthetic": m.get("synthetic"),
        "network_data_format": {
            "inputs": inputs,
            "outputs": {"probabilities": {"shape": [-1, cohort.num_outputs], "dtype": "float32",
                                          "value_range": [0, 1],
                                          "activation": "softmax" if cohort.task_type == "multiclass" else "sigmoid",
                                          "channel_def": dict(enumerate(cohort.label_names))}},
            "argument_order": names,
        },
        "intended_use": (SYNTHETIC_USE + " " if m.get("synthetic") else "") + INTENDED_USE,
        "data_source": {"cohort": cohort.path.name, "synthetic": m.get("synthetic"),
                        "synthetic_sources": m.get("synthetic_sources"), "created": m.get("created"),
                        "schema_version": m.get("schema_version"), "sources": shareable_sources(m.get("sources")),
                        "counts": m.get("counts"), "exclusions": m.get("exclusions")},
        "evaluation": {"split": "test", "n": evaluation["n_test"], "headline": {headline: evaluation["test"][headline]},
                       "macro_auprc_ci": evaluation["ci"]["macro_auprc_ci"],
                       "macro_auroc_ci": evaluation["ci"]["macro_auroc_ci"],
                       "per_label": evaluation["test"].get("per_label") or evaluation["test"].get("per_class"),
                       "validation": evaluation["validation"]},
        "training": {**config, "method": config["method_name"], "method_config": config["method"]},
    }


def register_champion(cohort_dir: Path, runs_dir: Path, evals_dir: Path, out: Path, settings, name: str | None = None
                      ) -> str:
    import mlflow

    from pipeline.tracking import setup_mlflow

    cohort = load_cohort(cohort_dir)
    champion = champion_of(load_evaluations([evals_dir]))
    run_dir = Path(runs_dir) / champion["run"]
    model, config = load_trained_model(run_dir)
    exportable = ExportableFusion(model, cohort.task_type, config["prediction_head"])
    names, example = example_inputs(cohort, settings.example_rows)
    card = model_card(cohort, config, champion, example, names)
    setup_mlflow(f"clinfuse/{cohort.name}")
    run_id = read_json(run_dir / "train_summary.json").get("mlflow_run_id")
    try:
        mlflow.MlflowClient().get_run(run_id)
    except Exception:  # the training run was tracked elsewhere: attach the model to a new run
        run_id = None
    name = name or card["name"]
    val = champion["validation"]["value"]  # None when no validation label had both classes
    reg = register_model(exportable, example, names, card, name, float(val) if val is not None else float("-inf"),
                         run_id)
    record = {"name": reg.name, "version": reg.version, "champion": reg.champion_moved,
              "val_metric": reg.val_metric, "previous_champion_val_metric": reg.previous_champion_metric,
              "model_uri": reg.model_uri, "run": str(run_dir), "method": champion["method"], "seed": champion["seed"],
              "test": {champion["test"]["headline"]: champion["test"][champion["test"]["headline"]]},
              "tracking_uri": mlflow.get_tracking_uri()}
    write_json(out, [record])
    moved = "now @champion" if reg.champion_moved else f"champion kept (val {reg.previous_champion_metric:.3f})"
    return (f"registered {reg.name} version {reg.version} from {champion['run']} "
            f"(val {reg.val_metric:.3f}; {moved}) -> {out}")

