"""Register a cohort's champion run (best validation metric) in the MLflow model registry.

The name is `<dataset>-<task>`; the version gets a model card (metadata.json, and as its
Markdown description) and the alias `champion` moves to it only if it beats the current
champion on validation. The cohort's report (report.html, its figures as PNG/SVG files) is
logged to the champion run, so the run shows how the model was evaluated.
"""

from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path

import numpy as np

from clinfuse.etl.atomic import read_json, write_json
from clinfuse.etl.errors import InputError
from clinfuse.evaluation.champion import champion_of
from clinfuse.models.export import ExportableFusion
from clinfuse.pipeline.data import IMAGE_MODALITIES, load_cohort, split_tensors
from clinfuse.pipeline.inference import load_trained_model
from clinfuse.pipeline.manifest import shareable_sources
from clinfuse.pipeline.registry import INTENDED_USE, SYNTHETIC_USE, register_model
from clinfuse.pipeline.results import load_evaluations, slug
from clinfuse.pipeline.runs import read_train_summary


def absent_in_training(cohort) -> dict[str, int]:
    """Training samples without each modality: a model that never saw one without `m` must not be
    asked to predict without it (the model card's `accepts_absent`, enforced by pipeline.serving)."""
    train = cohort.samples["split"].to_numpy() == "train"
    return {m: int((~cohort.samples[f"has_{m}"].to_numpy(bool)[train]).sum()) for m in cohort.modalities}


def example_inputs(cohort, rows: int) -> tuple[list[str], tuple[np.ndarray, ...]]:
    """The registered model's input example, in ExportableFusion's argument order.

    It is stored with the model (MLflow's input example) and shared with whoever can read the
    registry, so it never holds patient data: a synthetic cohort gives its first `rows`
    validation samples; any other cohort gives neutral values of the right shapes (zeros: the
    training mean of every z-scored feature with no observation, black images), every sample
    with its first modality and every other sample with the others (presence flags 1/0/1/...), except
    a modality no training sample lacked (its flag is always 1: the model refuses 0 for it).
    """
    names = list(cohort.modalities) + [f"has_{m}" for m in cohort.modalities]
    never_absent = [m for m, n in absent_in_training(cohort).items() if n == 0]  # flags that must be 1
    if cohort.manifest.synthetic is True:
        t = split_tensors(cohort, "val" if (cohort.samples["split"] == "val").sum() >= rows else "train")
        usable = np.ones(len(t), bool)
        for m in never_absent:
            usable &= t.present[m].cpu().numpy().astype(bool)
        batch = t.batch(np.flatnonzero(usable)[:rows])
        arrays = [batch["inputs"][m].numpy().astype(np.float32) for m in cohort.modalities]
        arrays += [batch["present"][m].numpy().astype(np.float32) for m in cohort.modalities]
        return names, tuple(arrays)
    arrays = [np.zeros((rows, *cohort.input_shape(m)), np.float32) for m in cohort.modalities]
    every_other = (np.arange(rows) % 2 == 0).astype(np.float32)
    arrays += [np.ones(rows, np.float32) if k == 0 or m in never_absent else every_other.copy()
               for k, m in enumerate(cohort.modalities)]
    return names, tuple(arrays)


def presence_meaning(modality: str, absent: int) -> str:
    """What a presence flag does, as the model card states it (enforced by pipeline.serving.check_inputs)."""
    if absent == 0:
        return (f"must be 1: no training sample lacked {modality}, so this model never learned to predict without "
                f"it; 0 is refused (clinfuse predict, the pyfunc model, mlflow models serve). Only exactly 0 or 1.")
    return (f"1 if the {modality} input of the sample is present, 0 if not: the {modality} input is then ignored "
            f"and the model predicts from the others, as for the {absent} training samples without it. "
            "Only exactly 0 or 1; at least one modality present.")


def example_source(cohort) -> str:
    """What the input example is (for the model card)."""
    if cohort.manifest.synthetic is True:
        return "the first validation samples of the synthetic cohort"
    return "neutral values, not patient data: zeros (training means, no observations, black images)"


def validation_margin(champion: dict, results: list[dict]) -> dict:
    """How far the champion's validation score is ahead of the best run of any other method.

    `margin` is None when no other method has a validation score (then nothing was beaten)."""
    others = [r for r in results if r["method"] != champion["method"] and r["validation"]["value"] is not None]
    value = champion["validation"]["value"]
    if not others or value is None:
        return {"metric": champion["validation"]["metric"], "champion": value, "runner_up": None, "margin": None}
    runner = max(others, key=lambda r: r["validation"]["value"])
    return {"metric": champion["validation"]["metric"], "champion": value,
            "runner_up": {"method": runner["method"], "seed": runner["seed"], "value": runner["validation"]["value"]},
            "margin": value - runner["validation"]["value"]}


def card_evaluation_details(evaluation: dict) -> dict:
    """The test positives and prevalence per label, the calibration summary and the operating thresholds
    (chosen on validation) of an evaluated run, for the model card."""
    test = evaluation["test"]
    per = test.get("per_label") or test.get("per_class") or {}
    counts = {lab: {"positives": m.get("n_pos"), "n": m.get("n"), "prevalence": m.get("prevalence")}
              for lab, m in per.items()}
    calibration = evaluation.get("calibration") or {}
    pooled = {k: v for k, v in (calibration.get("pooled") or {}).items() if k != "reliability"}
    ops = evaluation.get("operating_points") or {}
    thresholds = {lab: v.get("threshold") for lab, v in (ops.get("per_label") or {}).items()}
    return {"test_counts": counts, "calibration": pooled,
            "operating_points": {"rule": ops.get("rule"), "target": ops.get("target"), "chosen_on": "validation",
                                 "thresholds": thresholds} if ops else None}


def model_card(cohort, config: dict, evaluation: dict, example: tuple[np.ndarray, ...], names: list[str],
               margin: dict | None = None) -> dict:
    """A MONAI-bundle-style description of the inputs, outputs, data, metrics and training.

    `margin`: the champion's validation margin over the other methods (validation_margin)."""
    m = cohort.manifest
    recorded = m.to_json()  # the manifest as written (sources, exclusions as plain records)
    inputs = {}
    absent = absent_in_training(cohort)
    for name, arr in zip(names, example, strict=True):
        modality = name.removeprefix("has_")
        if name.startswith("has_"):
            inputs[name] = {"type": "presence flag", "shape": [-1], "dtype": "float32", "value_range": [0, 1],
                            "absent_in_training": absent[modality], "accepts_absent": absent[modality] > 0,
                            "meaning": presence_meaning(modality, absent[modality])}
            continue
        entry = {"type": "image" if name in IMAGE_MODALITIES else "tensor", "shape": [-1, *arr.shape[1:]],
                 "dtype": "float32", "description": m.input_descriptions[name]}
        if name in IMAGE_MODALITIES:
            entry["value_range"] = [0, 1]
        if name == "ehr":
            entry["channel_def"] = dict(enumerate(m.ehr_channels))
        if name == "tabular":
            entry["channel_def"] = dict(enumerate(m.tabular_features))
        inputs[name] = entry
    headline = evaluation["test"]["headline"]
    return {
        "schema": "clinfuse model card v1 (in the spirit of a MONAI bundle metadata.json)",
        "name": m.registered_model_name, "task": m.task, "dataset": m.dataset,
        "task_type": cohort.task_type,
        # from the cohort manifest: True = trained on the generator's synthetic exports, None = not recorded
        "synthetic": m.synthetic,
        "network_data_format": {
            "inputs": inputs,
            "outputs": {"probabilities": {"shape": [-1, cohort.num_outputs], "dtype": "float32",
                                          "value_range": [0, 1],
                                          "activation": "softmax" if cohort.task_type == "multiclass" else "sigmoid",
                                          "channel_def": dict(enumerate(cohort.label_names))}},
            "argument_order": names,
            "input_example": example_source(cohort),
        },
        "intended_use": (SYNTHETIC_USE + " " if m.synthetic else "") + INTENDED_USE,
        "data_source": {"cohort": cohort.path.name, "synthetic": m.synthetic,
                        "synthetic_sources": m.synthetic_sources, "created": m.created,
                        "schema_version": m.schema_version, "sources": shareable_sources(recorded["sources"]),
                        "counts": m.counts, "exclusions": recorded["exclusions"]},
        "evaluation": {"split": "test", "n": evaluation["n_test"], "headline": {headline: evaluation["test"][headline]},
                       "test_metrics": {k: v for k, v in evaluation["test"].items()
                                        if isinstance(v, float) and k.startswith(("macro", "micro", "accuracy"))},
                       "macro_auprc_ci": evaluation["ci"]["macro_auprc_ci"],
                       "macro_auroc_ci": evaluation["ci"]["macro_auroc_ci"],
                       "per_label": evaluation["test"].get("per_label") or evaluation["test"].get("per_class"),
                       "validation": evaluation["validation"],
                       **card_evaluation_details(evaluation), "validation_margin": margin},
        "training": {**config, "method": config["method_name"], "method_config": config["method"]},
    }


def log_report(report_dir: Path) -> int:
    """Log a cohort's report to the active run under `report/`: report.html, its metrics and tables, the
    DVC plot data, and each embedded figure as a file (`report/figures/NN-<name>.png|svg`); returns the
    number of figures."""
    import mlflow

    report_dir = Path(report_dir)
    page = report_dir / "report.html"
    for path in [page, *(report_dir / f for f in ("metrics.json", "metrics_detail.json", "metrics_about.json",
                                                   "comparison.csv", "verdicts.json"))]:
        if path.is_file():
            mlflow.log_artifact(str(path), artifact_path="report")
    if (report_dir / "plots").is_dir():
        mlflow.log_artifacts(str(report_dir / "plots"), artifact_path="report/plots")
    figures = embedded_figures(page.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, ext, data) in enumerate(figures, 1):
            (Path(tmp) / f"{i:02d}-{slug(name) or 'figure'}.{ext}").write_bytes(data)
        if figures:
            mlflow.log_artifacts(tmp, artifact_path="report/figures")
    return len(figures)


_FIGURE = re.compile(r"<img\b[^>]*>|<svg\b[^>]*>.*?</svg>", re.S)
_PNG_SRC = re.compile(r'src="data:image/png;base64,([^"]+)"')


def embedded_figures(page: str) -> list[tuple[str, str, bytes]]:
    """(name, "png" or "svg", file bytes) of every figure a self-contained report embeds, in page order:
    `<img src="data:image/png;base64,...">` (named by its alt text) and inline `<svg>` (by its aria-label)."""
    found = []
    for match in _FIGURE.finditer(page):
        tag = match.group(0)
        if tag.startswith("<img"):
            src = _PNG_SRC.search(tag)
            if src:
                alt = re.search(r'alt="([^"]*)"', tag)
                found.append((html.unescape(alt.group(1)) if alt else "", "png", base64.b64decode(src.group(1))))
        else:
            label = re.search(r'aria-label="([^"]*)"', tag)
            found.append((html.unescape(label.group(1)) if label else "", "svg", tag.encode()))
    return found


def _champion_margin(report_dir: Path, champion_run: str) -> dict | None:
    """The report's champion validation margin (verdicts.json), when it is about this champion run."""
    path = Path(report_dir) / "verdicts.json"
    if not path.is_file():
        return None
    margin = read_json(path).get("champion_margin")
    if not margin or margin.get("champion", {}).get("run") != champion_run:
        return None
    return {"runner_up": margin["runner_up"], "difference": margin["difference"], "ci": margin["ci"],
            "within_noise": margin["within_noise"]}


def register_champion(cohort_dir: Path, runs_dir: Path, evals_dir: Path, out: Path, settings, name: str | None = None,
                      report_dir: Path | None = None) -> str:
    """Register the cohort's champion run; with `report_dir`, log the report to the champion's run."""
    import mlflow

    from clinfuse.pipeline.provenance import git_state
    from clinfuse.pipeline.tracking import setup_mlflow

    cohort = load_cohort(cohort_dir)
    results = load_evaluations([evals_dir])
    champion = champion_of(results)
    run_dir = Path(runs_dir) / champion["run"]
    model, config = load_trained_model(run_dir)
    exportable = ExportableFusion(model, cohort.task_type, config["prediction_head"])
    names, example = example_inputs(cohort, settings.example_rows)
    card = model_card(cohort, config, champion, example, names, validation_margin(champion, results))
    experiment_id = setup_mlflow(f"clinfuse/{cohort.name}")
    run_id = read_train_summary(run_dir).get("mlflow_run_id")
    commit = None
    try:
        commit = mlflow.MlflowClient().get_run(run_id).data.tags.get("mlflow.source.git.commit")
    except Exception:  # the training run was tracked elsewhere: attach the model to a new run
        run_id = None
    if commit is None:  # the commit the model was trained at is unknown: name the one registering it, if clean
        git = git_state()
        commit = git["commit"] if git["commit"] and not git["dirty"] else None
    name = name or card["name"]
    val = champion["validation"]["value"]  # None when no validation label had both classes
    reg = register_model(exportable, example, names, card, name, float(val) if val is not None else float("-inf"),
                         run_id, git_commit=commit, experiment_id=experiment_id)
    if report_dir is not None and not (Path(report_dir) / "report.html").is_file():
        raise InputError(f"{Path(report_dir) / 'report.html'}: missing; run `clinfuse report --out {report_dir}` first")
    figures = None
    if report_dir is not None:
        run = mlflow.MlflowClient().get_model_version(reg.name, str(reg.version)).run_id
        with mlflow.start_run(run_id=run):
            figures = log_report(Path(report_dir))
    record = {"name": reg.name, "version": reg.version, "champion": reg.champion_moved,
              "val_metric": reg.val_metric, "previous_champion_val_metric": reg.previous_champion_metric,
              "model_uri": reg.model_uri, "run": str(run_dir), "method": champion["method"], "seed": champion["seed"],
              "test": {champion["test"]["headline"]: champion["test"][champion["test"]["headline"]]},
              "tracking_uri": mlflow.get_tracking_uri(), "report_figures_logged": figures}
    margin = _champion_margin(report_dir, champion["run"]) if report_dir is not None else None
    if margin is not None:
        # the rule picks the best validation score; this says whether its lead over the runner-up is within noise
        record["validation_margin"] = margin
    write_json(out, [record])
    moved = "now @champion" if reg.champion_moved else f"champion kept (val {reg.previous_champion_metric:.3f})"
    return (f"registered {reg.name} version {reg.version} from {champion['run']} "
            f"(val {reg.val_metric:.3f}; {moved}) -> {out}")

