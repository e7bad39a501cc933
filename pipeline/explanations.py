"""Explanations of a cohort's sweep, run by the analyze stage (DESIGN section 10).

For every sweep run (method x seed), on the test split:
  - the exact modality Shapley value of every prediction (`pipeline.modality_shapley`,
    probability scale) and the per-label reliance table (`evaluation.reliance`), kept as
    `explanations/reliance/<run>.csv` and as an artifact of the run in MLflow;
For the first seed's run of every method:
  - the paired difference of the image modality's share against the reference method
    (analyze.reference, late fusion) and one sentence per label where its CI excludes 0;
  - the cases: for the `explain_case_labels` labels with the most test positives, the patients
    picked by rule (`evaluation.attributions.select_cases`) at the label's operating point,
    with Integrated Gradients on the non-image input, LayerGradCam on the image encoder;
  - the model-randomisation check (Adebayo et al. 2018): the same attributions of the same
    cases by the network with re-initialised weights, and their rank correlation.
Patient ids never leave this module: cases are numbered.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clinfuse.etl.atomic import read_json
from clinfuse.evaluation.attributions import (
    CASE_RULES,
    mask_channels,
    rank_correlation,
    select_cases,
    top_variables,
    variable_hour_map,
)
from clinfuse.evaluation.explain_plots import cases_figure, reliance_figure
from clinfuse.evaluation.operating import choose_threshold
from clinfuse.evaluation.reliance import differing_labels, reliance_rows, reliance_shares, share_difference

from .attributions import grad_cam, integrated_gradients, model_predict, untrained_model
from .data import IMAGE_MODALITIES, Cohort, SplitTensors
from .inference import load_trained_model, predict_tensors
from .modality_shapley import modality_shapley

IG_BASELINE = {
    "ehr": ("every z-scored value at its training mean, the observation masks held at the patient's own (what was "
            "measured is kept; the masks get no attribution), presence flag kept; the other modalities fixed at "
            "the patient's own"),
    "tabular": ("all zeros: every z-scored feature at its training mean and every indicator (missing, censored, "
                "category) 0, presence flag kept; the other modalities fixed at the patient's own"),
}


def _ig_fixed(modality: str | None, names: list[str]) -> np.ndarray | None:
    """The channels an IG baseline holds at the input: the EHR's observation masks (pipeline.attributions)."""
    return mask_channels(names) if modality == "ehr" else None


def shapley_of_split(model, config: dict, tensors: SplitTensors, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(phi `[N, M, K]`, p `[N, K]`) of a run on a split held in memory (probability scale)."""
    predict = model_predict(model, config["prediction_head"], config["task_type"])
    phis, probs = [], []
    for batch in tensors.batches(batch_size):
        phi, p_full, _ = modality_shapley(predict, batch["inputs"], batch["present"], config["modalities"])
        phis.append(phi.numpy())
        probs.append(p_full.numpy())
    k = len(config["label_names"])
    if not phis:
        return np.zeros((0, len(config["modalities"]), k), np.float32), np.zeros((0, k), np.float32)
    return np.concatenate(phis), np.concatenate(probs)


def _limit_patients(tensors: SplitTensors, n_patients: int) -> SplitTensors:
    """The rows of the first `n_patients` patients (in row order): a bounded, deterministic subset."""
    patients = list(dict.fromkeys(tensors.groups.tolist()))
    if len(patients) <= n_patients:
        return tensors
    keep = set(patients[:n_patients])
    idx = np.flatnonzero([g in keep for g in tensors.groups])
    t = torch.from_numpy(idx)
    return SplitTensors(tensors.rows[idx], {m: x[t] for m, x in tensors.inputs.items()},
                        {m: p[t] for m, p in tensors.present.items()}, tensors.y[t], tensors.groups[idx])


def _indicators(y: np.ndarray, task_type: str, k: int) -> np.ndarray:
    """`[N, K]` 0/1 labels (one-vs-rest for a multi-class task)."""
    return np.eye(k, dtype=np.float32)[y] if task_type == "multiclass" else np.asarray(y, np.float32)


def _thresholds(run: Path, evals_dir: Path | None, model, config, val: SplitTensors) -> dict[str, float | None]:
    """Each label's operating point: the evaluation's (validation-chosen) when it exists, else Youden on validation."""
    labels = config["label_names"]
    path = evals_dir / run.name / "metrics.json" if evals_dir is not None else None
    if path is not None and path.is_file():
        per_label = (read_json(path).get("operating_points") or {}).get("per_label") or {}
        if all(lab in per_label for lab in labels):
            return {lab: per_label[lab].get("threshold") for lab in labels}
    p = predict_tensors(model, val, config["task_type"], config["prediction_head"])
    y = _indicators(val.y.numpy(), config["task_type"], len(labels))
    return {lab: choose_threshold(y[:, k], p[:, k]) for k, lab in enumerate(labels)}


def _image_and_other(modalities: list[str]) -> tuple[str | None, str | None]:
    image = next((m for m in reversed(modalities) if m in IMAGE_MODALITIES), None)
    other = next((m for m in modalities if m not in IMAGE_MODALITIES), None)
    return image, other


def _slice(image: np.ndarray, cam: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A film as is; a volume `[D, H, W]` cut through the Grad-CAM maximum (else its middle) along D."""
    if image.ndim == 2:
        return image, cam
    d = int(np.unravel_index(np.argmax(cam), cam.shape)[0]) if cam is not None and cam.max() > 0 else image.shape[0] // 2
    return image[d], None if cam is None else cam[d]


def explain_cases(run: Path, model, config: dict, cohort: Cohort, test: SplitTensors, val: SplitTensors,
                  probs: np.ndarray, phi: np.ndarray, evals_dir: Path | None, settings) -> tuple[dict, dict[str, bytes]]:
    """The cases of one run, their attributions, the randomisation check, and one figure per label."""
    labels, task_type, modalities = config["label_names"], config["task_type"], config["modalities"]
    y = _indicators(test.y.numpy(), task_type, len(labels))
    order = np.argsort(-y.sum(0), kind="stable")[: settings.explain_case_labels]
    thresholds = _thresholds(run, evals_dir, model, config, val)
    picks = []
    for k in order:
        t = thresholds[labels[k]]
        if t is not None:
            picks += [(int(k), rule, row) for rule, row in select_cases(y[:, k], probs[:, k], t,
                                                                        settings.explain_cases_per_rule)]
    if not picks:
        return {"cases": [], "sanity": [], "thresholds": thresholds}, {}
    rows = torch.as_tensor([r for _, _, r in picks])
    batch = test.batch(rows)
    targets = [k for k, _, _ in picks]
    image, other = _image_and_other(modalities)
    trained = model_predict(model, config["prediction_head"], task_type)
    control_model = untrained_model(config, settings.seed)
    control = model_predict(control_model, config["prediction_head"], task_type)
    maps, sanity = {}, []
    names = _variable_names(cohort, other)
    if other is not None:
        fixed = _ig_fixed(other, names)
        maps[other] = integrated_gradients(trained, batch["inputs"], batch["present"], other, targets,
                                           settings.explain_ig_steps, fixed)
        random_ig = integrated_gradients(control, batch["inputs"], batch["present"], other, targets,
                                         settings.explain_ig_steps, fixed)
        sanity.append(_sanity_row(f"Integrated Gradients ({other})", maps[other], random_ig))
    if image is not None:
        cam = grad_cam(trained, model, batch["inputs"], batch["present"], image, targets)
        if cam is not None:
            maps[image] = cam
            random_cam = grad_cam(control, control_model, batch["inputs"], batch["present"], image, targets)
            sanity.append(_sanity_row(f"Grad-CAM ({image}, last convolution)", cam, random_cam))
    cases, panels = [], {}
    for i, (k, rule, row) in enumerate(picks):
        case = {"case": i + 1, "label": labels[k], "rule": CASE_RULES[rule], "risk": float(probs[row, k]),
                "threshold": thresholds[labels[k]], "outcome": int(y[row, k]),
                "contributions": {m: float(phi[row, j, k]) for j, m in enumerate(modalities)},
                "present": {m: bool(test.present[m][row]) for m in modalities}, "top_variables": []}
        panel = {"title": f"case {i + 1}: {rule.replace('_', ' ')}\nrisk {case['risk']:.2f}, outcome {case['outcome']}"}
        if other is not None:
            if other == "ehr" and names:
                variables, heat = variable_hour_map(maps[other][i], names)  # [V, T]
                case["top_variables"] = top_variables(heat.sum(-1), variables, settings.explain_top_variables)
                panel.update(heatmap=heat, variables=variables)
            else:
                flat = maps[other][i].reshape(-1)
                case["top_variables"] = top_variables(flat, names if len(names) == len(flat) else
                                                      [f"{other}[{j}]" for j in range(len(flat))],
                                                      settings.explain_top_variables)
        if image in maps and case["present"][image]:
            film, cam = _slice(batch["inputs"][image][i, 0].numpy(), maps[image][i])
            panel.update(image=film, cam=cam)
        cases.append(case)
        panels.setdefault(labels[k], []).append(panel)
    figures = {}
    for j, (label, group) in enumerate(panels.items()):
        name = f"cases_{config['method_name']}_{j}"
        figures[name] = cases_figure(group)
        for c in cases:
            if c["label"] == label:
                c["figure"] = name
    return {"cases": cases, "sanity": sanity, "thresholds": thresholds}, figures


def _variable_names(cohort: Cohort, modality: str | None) -> list[str]:
    if modality == "ehr":
        return list(cohort.manifest.ehr_channels or [])
    if modality == "tabular":
        return list(cohort.manifest.tabular_features or [])
    return []


def _sanity_row(what: str, trained: np.ndarray, random: np.ndarray) -> dict:
    """Rank correlation of |attribution| per case between the trained and the re-initialised network."""
    rhos = [rank_correlation(np.abs(a), np.abs(b)) for a, b in zip(trained, random, strict=True)]
    rhos = [r for r in rhos if r is not None]
    return {"attribution": what, "n_cases": len(rhos), "median_rank_correlation": float(np.median(rhos)) if rhos
            else None, "max_rank_correlation": float(np.max(rhos)) if rhos else None}


def explain_cohort(sweep_runs: list[Path], cohort: Cohort, evals_dir: Path | None, settings,
                   val: SplitTensors, test: SplitTensors) -> tuple[dict, dict[str, bytes], dict[str, str]]:
    """Everything above for one cohort: (document for analysis.json, figures, reliance CSV per run)."""
    started = time.perf_counter()
    test = _limit_patients(test, settings.explain_max_patients)
    modalities, labels = cohort.modalities, cohort.label_names
    image, explained = _image_and_other(modalities)
    compared = image or modalities[-1]
    level = settings.explain_ci_level
    reliance, tables, phis, cases, figures = {}, {}, {}, {}, {}
    first_seed = {}
    for run in sweep_runs:
        t0 = time.perf_counter()
        model, config = load_trained_model(run)
        phi, probs = shapley_of_split(model, config, test)
        shares = reliance_shares(phi, test.groups, settings.explain_resamples, settings.seed, level)
        rows = reliance_rows(shares, modalities, labels)
        tables[run.name] = pd.DataFrame(rows).to_csv(index=False)
        reliance[run.name] = {"method": config["method_name"], "seed": config["seed"], "rows": rows}
        method = config["method_name"]
        if method not in first_seed:
            first_seed[method] = run.name
            phis[method] = phi
            cases[method], figs = explain_cases(run, model, config, cohort, test, val, probs, phi, evals_dir, settings)
            figures.update(figs)
        print(f"  explained {cohort.name}/{run.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    j = modalities.index(compared)
    by_method = {}
    for method, run_name in first_seed.items():
        rows = [r for r in reliance[run_name]["rows"] if r["modality"] == compared]
        by_method[method] = {key: np.array([np.nan if r[src] is None else r[src] for r in rows])
                             for key, src in (("share", "share"), ("ci_low", "ci_low"), ("ci_high", "ci_high"))}
    figures["reliance"] = reliance_figure(labels, by_method, compared, level)
    reference = settings.reference if settings.reference in phis else None
    sentences, differences = [], {}
    if reference is not None:
        diffs = {m: share_difference(phis[m], phis[reference], test.groups, j, settings.explain_resamples,
                                     settings.seed, level) for m in phis if m != reference}
        differences = {m: {"difference": d["difference"].tolist(), "ci_low": d["ci_low"].tolist(),
                           "ci_high": d["ci_high"].tolist()} for m, d in diffs.items()}
        sentences = differing_labels(diffs, labels, compared, reference,
                                     {m: v["share"] for m, v in by_method.items()}, level)
    doc = {"modalities": modalities, "compared_modality": compared, "labels": labels, "scale": "probability",
           "n_test_rows": len(test), "n_test_patients": int(len(set(test.groups.tolist()))),
           "ci_level": level, "n_resamples": settings.explain_resamples, "first_seed_runs": first_seed,
           "reference": reference, "reliance": reliance, "differences": differences, "sentences": sentences,
           "cases": cases, "ig_baseline": IG_BASELINE.get(explained, "not used (no non-image modality)"),
           "ig_steps": settings.explain_ig_steps,
           "figures": sorted(figures), "seconds": round(time.perf_counter() - started, 1)}
    return doc, figures, tables


def write_reliance_tables(folder: Path, tables: dict[str, str]) -> None:
    """`folder/explanations/reliance/<run>.csv` (inside the analysis stage's temporary folder)."""
    out = Path(folder) / "explanations" / "reliance"
    out.mkdir(parents=True, exist_ok=True)
    for run, text in tables.items():
        (out / f"{run}.csv").write_text(text)


def log_reliance_tables(sweep_runs: list[Path], out: Path) -> None:
    """Each run's reliance table as an MLflow artifact of its training run (`explanations/reliance.csv`)."""
    import mlflow

    for run in sweep_runs:
        table = Path(out) / "explanations" / "reliance" / f"{run.name}.csv"
        run_id = read_json(run / "train_summary.json").get("mlflow_run_id")
        if not run_id or not table.is_file():
            continue
        try:
            mlflow.MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            continue
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(str(table), artifact_path="explanations")
