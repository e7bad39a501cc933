"""MLflow model registry: register the best run per task and move `champion`.

Registered names are `<dataset>-<task>` (e.g. `mimic-phenotype`). The alias
`champion` moves to a new version only when it beats the current champion on
the validation metric (registry stages are deprecated; aliases replace them).
Synthetic results never pass for clinical ones: every version is tagged
`synthetic` (true / false / unknown, from the model card), a version not known to
be trained on real data never takes `champion` from one that is, and a real-data
version always takes it from a synthetic or unknown one (their validation metrics
are not comparable).
Each version carries a model card, `metadata.json`, in the spirit of a MONAI
bundle: inputs with shape, dtype, channel meaning and value range, intended
use, data source, evaluation metrics with CIs and the training config. The
card is also the version's Markdown description (what MLflow's UI shows), and
its key facts are version tags (cohort, method, seed, synthetic, headline
metric, git commit), so versions can be searched and compared.
The logged model is servable: `mlflow.pyfunc.load_model("models:/<name>@champion")`
and `mlflow models predict` take named inputs (see pipeline.serving), while
`mlflow.pytorch.load_model` gives the torch-native exported program.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinfuse.evaluation.champion import beats_champion

CHAMPION = "champion"
REGISTRY_EXPERIMENT = "clinfuse/registry"  # runs made only to hold a registered model
CARD_FILE = "metadata.json"

INTENDED_USE = (
    "Research use only: benchmarking multimodal fusion and optimisation methods on "
    "retrospective ICU (MIMIC-IV/MIMIC-CXR) or Alzheimer's (ADNI) cohorts. Not a medical "
    "device; not validated for clinical decision making. Trained on synthetic data unless "
    "the data source below names a credentialed export."
)
SYNTHETIC_USE = ("SYNTHETIC DATA: trained and evaluated on clinfuse's generated exports, not on patients; "
                 "its metrics say nothing about clinical performance.")


@dataclass(frozen=True)
class Registration:
    """What `register_model` did."""

    name: str
    version: int
    champion_moved: bool
    val_metric: float
    previous_champion_metric: float | None
    model_uri: str


def model_signature(input_names: list[str], example: tuple[np.ndarray, ...], labels: list[str]):
    """Named TensorSpec inputs with a dynamic batch axis (the `pt2` format requires TensorSpecs; the
    pyfunc takes the same names), and one float probability column per label as outputs."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema(
        [
            TensorSpec(arr.dtype, (-1, *arr.shape[1:]), name)
            for name, arr in zip(input_names, example, strict=True)
        ]
    )
    outputs = Schema([ColSpec(DataType.float, label) for label in labels])
    # `explain`: add per-sample modality contributions to the output (pipeline.serving)
    params = ParamSchema([ParamSpec("explain", DataType.boolean, False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def card_labels(card: dict[str, Any], num_outputs: int) -> list[str]:
    """The output names from a model card (`network_data_format.outputs.probabilities.channel_def`),
    else `output_0`, `output_1`, ... (a card that does not name them)."""
    defs = card.get("network_data_format", {}).get("outputs", {}).get("probabilities", {}).get("channel_def")
    if defs and len(defs) == num_outputs:
        return [str(defs[k] if k in defs else defs[str(k)]) for k in range(num_outputs)]
    return [f"output_{k}" for k in range(num_outputs)]


def champion_metric(client, name: str) -> float | None:
    """Validation metric recorded on the current champion version, or None if none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    value = version.tags.get("val_metric")
    return float(value) if value is not None else None


def provenance(synthetic: bool | None) -> str:
    """The `synthetic` version tag: "true", "false" or "unknown" (card without the flag)."""
    return "unknown" if synthetic is None else str(bool(synthetic)).lower()


def champion_provenance(client, name: str) -> str | None:
    """The current champion's `synthetic` tag ("unknown" for versions registered before the tag), or None."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return version.tags.get("synthetic", "unknown")


def takes_champion(val_metric: float, synthetic: str, previous_metric: float | None,
                   previous_synthetic: str | None) -> bool:
    """Whether a new version (tag `synthetic`) takes `champion` from the current one.

    Only real data ("false") competes with real data; a real-data version replaces a
    synthetic or unknown champion whatever the metrics; otherwise the better validation
    metric wins (higher is better).
    """
    if previous_synthetic is None:
        return True
    if previous_synthetic == "false" and synthetic != "false":
        return False
    if synthetic == "false" and previous_synthetic != "false":
        return True
    return beats_champion(val_metric, previous_metric)


def _pip_requirements() -> list[str]:
    # Explicit requirements: MLflow's inference imports the model in a subprocess
    # (slow) and would log torch with the local "+cpu" label. What pipeline.serving imports; clinfuse
    # itself is inside the model (code/clinfuse, see pipeline.serving.stage_package).
    import mlflow

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy",
            "pandas"]


def register_model(
    exportable: torch.nn.Module,
    example: tuple[np.ndarray, ...],
    input_names: list[str],
    card: dict[str, Any],
    name: str,
    val_metric: float,
    run_id: str | None = None,
    git_commit: str | None = None,
    experiment_id: str | None = None,
) -> Registration:
    """Log `exportable` (pt2 program with `pytorch` and `python_function` flavors), register it as
    `name`, describe the version with the card, maybe move `champion`.

    Args:
        exportable: a module taking positional tensors (see models.export).
        example: a real input example, one array per input (batch size >= 2, so
            the exported graph keeps a dynamic batch axis).
        input_names: names of the inputs, in order (the pyfunc's input names).
        card: the model card; written as `metadata.json` next to the model, and as the
            version's Markdown description and tags.
        name: registered model name, `<dataset>-<task>`.
        val_metric: validation metric used to decide the champion (higher is better).
        run_id: MLflow run to attach the model to (the training run), or None for a new run.
        git_commit: the commit the model was trained at (version tag `git_commit`), if known.
        experiment_id: experiment of the new run when `run_id` is None; default `clinfuse/registry`
            (never MLflow's Default experiment, whose artifacts would land in `./mlruns`).
    """
    import mlflow

    from . import serving

    client = mlflow.MlflowClient()
    exportable = exportable.eval()
    with torch.no_grad():
        out = exportable(*[torch.from_numpy(a) for a in example])
    labels = card_labels(card, int(out.shape[-1]))
    signature = model_signature(input_names, example, labels)
    synthetic = provenance(card.get("synthetic"))

    with tempfile.TemporaryDirectory() as tmp:
        card_path = Path(tmp) / CARD_FILE
        card_path.write_text(json.dumps(card, indent=2, default=str))
        if run_id is None and experiment_id is None:
            from .tracking import setup_mlflow

            experiment_id = setup_mlflow(REGISTRY_EXPERIMENT, "Runs that only hold a registered model: versions "
                                         "registered without a tracked training run in this store.")
        with mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(experiment_id=experiment_id,
                                                                              run_name=f"register-{name}"):
            info = mlflow.models.Model.log(
                None,  # artifact_path (deprecated in MLflow 3 for `name`)
                name="model",
                flavor=serving,
                exportable=exportable,
                example=dict(zip(input_names, example, strict=True)),
                labels=labels,
                signature=signature,
                pip_requirements=_pip_requirements(),
                extra_files=[str(card_path)],
                metadata={"model_card": CARD_FILE, "input_names": input_names},
            )
            mlflow.log_artifact(str(card_path), artifact_path="model_card")
    from .tracking import store_lock

    with store_lock():  # two first registrations of a name would both try to create it
        _ensure_registered_model(client, name)
    mv = client.create_model_version(name=name, source=info.model_uri, run_id=info.run_id,
                                     description=card_markdown(card, name, git_commit))
    version = int(mv.version)
    tags = {"val_metric": f"{val_metric:.6f}", **version_tags(card, git_commit)}
    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, value)
        moved, previous = move_champion_if_better(client, name, version, val_metric, synthetic)
    except BaseException:
        _remove_half_registered(client, name, version)
        raise
    return Registration(name, version, moved, val_metric, previous, f"models:/{name}/{version}")


def _remove_half_registered(client, name: str, version: int) -> None:
    """Delete a version whose tags or champion move failed: a version without its val_metric and
    synthetic tags would be misjudged by every later registration (best effort: the store is failing)."""
    try:
        client.delete_model_version(name, str(version))
    except Exception:  # noqa: BLE001 - the original error is the one to report
        print(f"registry {name}: version {version} was created but could not be completed or removed; "
              f"delete it yourself (MlflowClient().delete_model_version({name!r}, '{version}'))", file=sys.stderr)


def move_champion_if_better(client, name: str, version: int, val_metric: float, synthetic: str = "unknown"
                            ) -> tuple[bool, float | None]:
    """Point `champion` at `version` when it beats the current champion (compare-and-set).

    "Beats" is `takes_champion`: better validation metric, and a synthetic-data version
    never displaces a real-data champion.

    The read of the current champion and the alias move happen under the store's
    inter-process lock, so two concurrent registrations cannot leave the worse
    version as champion; the alias is read back after writing.

    Returns (moved, previous champion's validation metric or None).
    """
    from .tracking import store_lock

    with store_lock():
        previous = champion_metric(client, name)
        moved = takes_champion(val_metric, synthetic, previous, champion_provenance(client, name))
        if moved:
            client.set_registered_model_alias(name, CHAMPION, str(version))
            now = client.get_model_version_by_alias(name, CHAMPION)
            if int(now.version) != int(version):
                raise RuntimeError(f"registry {name}: champion alias points at v{now.version}, expected v{version}")
    return moved, previous


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Multimodal fusion model trained by clinfuse. Each version's description is its "
            "model card (task, inputs, labels, data, metrics with CIs, intended use); the alias `champion` "
            "marks the version to use. Load it with `mlflow.pyfunc.load_model` (named inputs, one "
            "probability column per label) or `mlflow.pytorch.load_model` (the exported torch program)."
        )


# the multi-class mAP (mean one-vs-rest average precision) is the macro AUPRC: one name, as in the report
METRIC_NAMES = {"macro_auprc": "macro AUPRC", "macro_map": "macro AUPRC", "macro_auroc": "macro AUROC",
                "micro_auprc": "micro AUPRC", "micro_auroc": "micro AUROC"}


def _card_summary(card: dict[str, Any]) -> str:
    """E.g. "phenotype: masam (seed 42); test macro AUPRC 0.412 (95% CI 0.380 to 0.440); validation
    macro AUPRC 0.398 (selects the champion)"."""
    ev = card.get("evaluation", {})
    training = card.get("training", {})
    seed = f" (seed {training['seed']})" if "seed" in training else ""
    parts = [f"{card.get('task', '')}: {training.get('method', '')}{seed}"]
    if card.get("synthetic"):
        parts.insert(0, "SYNTHETIC DATA (not clinical)")
    for key, val in ev.get("headline", {}).items():
        name = METRIC_NAMES.get(key, key.replace("_", " "))
        text = f"{ev.get('split', 'test')} {name} " + ("n/a" if val is None else f"{val:.3f}")
        ci = ev.get("macro_auprc_ci") if key in ("macro_auprc", "macro_map") else None
        if ci and ci[0] is not None:
            text += f" (95% CI {ci[0]:.3f} to {ci[1]:.3f})"
        parts.append(text)
        val_metric = ev.get("validation", {}).get("value")
        if val_metric is not None:
            parts.append(f"validation {name} {val_metric:.3f} (selects the champion)")
    return "; ".join(parts)


DESCRIPTION_LIMIT = 5000  # characters MLflow's SQL stores keep for a model version's description


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def card_markdown(card: dict[str, Any], name: str, git_commit: str | None = None) -> str:
    """The model card as the registered version's Markdown description.

    Sections: summary line, task, inputs, labels, data (source, synthetic or not, counts), test
    metrics with their bootstrap CIs, intended use, training and how to call the model. The full
    card (per-label metrics, channel definitions, the training config) stays in metadata.json.
    """
    ev = card.get("evaluation", {})
    training = card.get("training", {})
    fmt = card.get("network_data_format", {})
    outputs = fmt.get("outputs", {}).get("probabilities", {})
    labels = [str(v) for v in (outputs.get("channel_def") or {}).values()]
    source = card.get("data_source", {})
    synthetic = card.get("synthetic")
    lines = [_card_summary(card), ""]  # first: a synthetic-data version says so before anything else
    if synthetic:
        lines += ["> **Synthetic data.** Trained and evaluated on clinfuse's generated exports, not on patients; "
                  "the metrics below say nothing about clinical performance.", ""]
    lines += ["### Task", f"{card.get('dataset', '')} {card.get('task', '')}: {card.get('task_type', '')} "
              f"prediction of {len(labels)} output(s), {outputs.get('activation', '')} probabilities.", ""]
    inputs = fmt.get("inputs", {})
    if inputs:
        lines += ["### Inputs", "| name | shape | dtype | meaning |", "|---|---|---|---|"]
        for key, spec in inputs.items():
            meaning = spec.get("description") or spec.get("meaning") or ""
            if spec.get("value_range"):
                meaning += f" (range {spec['value_range'][0]} to {spec['value_range'][1]})"
            lines.append(f"| `{key}` | {spec.get('shape')} | {spec.get('dtype', '')} | {meaning} |")
        lines.append("")
    if labels:
        lines += ["### Labels", "One probability column per label: " + ", ".join(f"`{x}`" for x in labels) + ".", ""]
    counts = source.get("counts")
    lines += ["### Data", f"- cohort: `{source.get('cohort', '')}` (created {source.get('created') or 'n/a'})",
              f"- synthetic: **{provenance(synthetic)}**"
              + (f" ({', '.join(source.get('synthetic_sources') or [])})" if source.get("synthetic_sources") else ""),
              f"- sources: {', '.join(sorted(source.get('sources') or {})) or 'n/a'}"]
    if counts:
        lines.append("- counts: " + ", ".join(f"{k} {v}" for k, v in counts.items() if not isinstance(v, dict)))
    lines.append("")
    test_metrics = dict(ev.get("test_metrics") or {})
    for key, val in ev.get("headline", {}).items():
        test_metrics.setdefault(key, val)
    cis = {"macro_auprc": ev.get("macro_auprc_ci"), "macro_map": ev.get("macro_auprc_ci"),
           "macro_auroc": ev.get("macro_auroc_ci")}
    if test_metrics:
        lines += [f"### Metrics ({ev.get('split', 'test')} split, n = {ev.get('n', 'n/a')}; 95% bootstrap CI "
                  "over patients)", "| metric | value | 95% CI |", "|---|---|---|"]
        for key, val in test_metrics.items():
            ci = cis.get(key)
            ci_text = f"{_fmt(ci[0])} to {_fmt(ci[1])}" if ci and ci[0] is not None else "n/a"
            lines.append(f"| {METRIC_NAMES.get(key, key.replace('_', ' '))} | {_fmt(val)} | {ci_text} |")
        val = ev.get("validation", {})
        metric = str(val.get("metric", "")).removeprefix("val_")
        lines += ["", f"Validation {METRIC_NAMES.get(metric, metric.replace('_', ' '))}: {_fmt(val.get('value'))} "
                  f"(best epoch "
                  f"{val.get('best_epoch', 'n/a')}; selects the champion).", ""]
    lines += _evaluation_detail_lines(ev)
    lines += ["### Intended use", card.get("intended_use", INTENDED_USE), ""]
    lines += ["### Training", f"method `{training.get('method', '')}`, seed {training.get('seed', 'n/a')}"
              + (f", git commit `{git_commit}`" if git_commit else "") + "; full config in `metadata.json`.", ""]
    names = fmt.get("argument_order") or list(inputs)
    lines += ["### Use", "```python", "import mlflow",
              f'model = mlflow.pyfunc.load_model("models:/{name}@champion")',
              "probs = model.predict({" + ", ".join(f'"{n}": ...' for n in names) + "})  # one column per label",
              "```",
              f"`mlflow models predict -m models:/{name}@champion -i serving_input_example.json "
              "--content-type json --env-manager local`; `clinfuse predict` scores a processed cohort."]
    text = "\n".join(lines)
    if len(text) > DESCRIPTION_LIMIT:
        tail = "\n\n(cut to MLflow's description limit: the full card is extra_files/metadata.json)"
        text = text[: DESCRIPTION_LIMIT - len(tail)] + tail
    return text


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _evaluation_detail_lines(ev: dict[str, Any]) -> list[str]:
    """Card sections from the champion's evaluation: test positives and prevalence per label, the
    calibration summary, the operating thresholds and how they were chosen, the validation margin."""
    lines: list[str] = []
    counts = ev.get("test_counts") or {}
    if counts:
        lines += [f"### Test positives and prevalence ({ev.get('split', 'test')} split)",
                  "Positives / samples (prevalence) per label: " + "; ".join(
                      f"{lab} {c.get('positives', 'n/a')}/{c.get('n', 'n/a')} ({_pct(c.get('prevalence'))})"
                      for lab, c in counts.items()) + ".", ""]
    cal = ev.get("calibration") or {}
    if cal:
        slope = _fmt(cal.get("slope")) if cal.get("slope") is not None else (cal.get("slope_note") or "n/a")
        lines += ["### Calibration (test split, all labels pooled)",
                  f"Brier score {_fmt(cal.get('brier'))}; calibration slope {slope}, intercept "
                  f"{_fmt(cal.get('intercept'))} (slope 1 and intercept 0 = calibrated; slope < 1: "
                  "predictions too extreme).", ""]
    ops = ev.get("operating_points") or {}
    if ops:
        rule = ops.get("rule")
        how = ("maximises Youden's J (sensitivity + specificity - 1)" if rule == "youden" else
               f"the highest threshold with sensitivity >= {ops.get('target')}" if rule == "target_sensitivity"
               else str(rule))
        lines += ["### Operating threshold",
                  f"Chosen on the validation split ({how}), then applied unchanged to the test split; a "
                  "sample is positive when its probability is >= the threshold: " + "; ".join(
                      f"{lab} {_fmt(t) if t is not None else 'none (validation split degenerate)'}"
                      for lab, t in (ops.get("thresholds") or {}).items()) + ".", ""]
    margin = ev.get("validation_margin") or {}
    if margin:
        metric = str(margin.get("metric", "")).removeprefix("val_")
        name = METRIC_NAMES.get(metric, metric.replace("_", " "))
        runner = margin.get("runner_up")
        text = (f"Validation {name} {_fmt(margin.get('champion'))} against {_fmt(runner['value'])} for the best "
                f"other method ({runner['method']}, seed {runner['seed']}): margin {margin['margin']:+.3f}. "
                "A margin within the runs' seed-to-seed spread does not show this method is better."
                if runner and margin.get("margin") is not None else
                "No other method had a validation score: the champion was not chosen over another method.")
        lines += ["### Champion's validation margin", text, ""]
    return lines


def version_tags(card: dict[str, Any], git_commit: str | None = None) -> dict[str, str]:
    """Key facts as version tags: cohort, method, seed, synthetic, headline metric, git commit."""
    ev = card.get("evaluation", {})
    training = card.get("training", {})
    tags = {"cohort": str(card.get("data_source", {}).get("cohort", "")), "method": str(training.get("method", "")),
            "seed": str(training.get("seed", "")), "synthetic": provenance(card.get("synthetic"))}
    for key, val in ev.get("headline", {}).items():
        tags["headline_metric"] = f"{ev.get('split', 'test')}_{key}"
        tags["headline_value"] = "n/a" if val is None else f"{val:.6f}"
    if git_commit:
        tags["git_commit"] = git_commit
    return {k: v for k, v in tags.items() if v != ""}


def download_registered_model(model_uri: str) -> tuple[Path, dict[str, Any]]:
    """Download a registered version (e.g. `models:/mimic-phenotype@champion`) and read its card.

    Returns the local model folder (for `mlflow.pytorch.load_model`) and the parsed metadata.json.
    """
    import mlflow

    from clinfuse.etl.errors import InputError

    # Only registered versions, only the pt2 (torch.export) format: a local path or a pickled
    # model could run arbitrary code when loaded.
    if not model_uri.startswith("models:/"):
        raise InputError(f"{model_uri}: not a registry URI; expected models:/<name>@<alias> or models:/<name>/<version>")
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except mlflow.exceptions.MlflowException as exc:
        raise InputError(f"{model_uri}: cannot be loaded from {mlflow.get_tracking_uri()} "
                         f"({str(exc).splitlines()[0]})") from None
    if (local / "data" / "model.pth").exists() or not (local / "data" / "model.pt2").is_file():
        raise InputError(f"{model_uri}: not a clinfuse pt2 model (data/model.pt2); pickled models are never loaded")
    card = local / "extra_files" / CARD_FILE
    if not card.is_file():
        raise InputError(f"{model_uri}: has no {CARD_FILE} model card; register it with `clinfuse register`")
    return local, json.loads(card.read_text())
