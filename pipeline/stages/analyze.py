"""Why a method wins: the paper's analyses on every trained run of a cohort.

Output folder (reports/<cohort>/analysis/):
  analysis.json        every number below, per run
  figures/*.png        flatness, landscape_1d, landscape_2d_{train,test}, landscape_surface,
                       alignment, probes, label_noise, sensitivity, efficiency
  skipped.json         analyses that could not run, with the reason (never silently absent)

Per sweep run (method x seed), from its best checkpoint, in eval mode:
  1. sharpness per encoder: Hutchinson trace of the fused-loss Hessian block (per parameter,
     with its standard error) and the top eigenvalue, on a fixed subset of training batches;
  2. loss landscapes (1D, 2D) along filter-normalised directions drawn with the same seed for
     every method, over all parameters and per encoder, on training and test losses;
  4. linear probes on each frozen encoder's features (train -> test), against the unimodal
     baseline run of that modality when one was trained.
Across runs: 3. gamma_m over training (the runs' alignment.json, `train.alignment_every`);
5. metric vs training label-noise rate; 6. MASAM's metric vs alpha, beta, rho (runs found in
the cohort's runs folder and in the MLflow experiment, e.g. from `dvc exp run --queue`);
7. step time, inference time and peak memory per method on the same model and batch.
The loss analysed is the prediction loss of the `fused` logits (task BCE / CE), the same
definition for every method.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinfuse.etl.atomic import atomic_dir, read_json, write_json
from clinfuse.etl.errors import InputError
from clinfuse.evaluation import analysis_plots as plots
from clinfuse.evaluation.claims import eigenvalue_status
from clinfuse.evaluation.dominance import dominance_series
from clinfuse.evaluation.flatness import (
    filter_normalized_direction,
    hutchinson_trace,
    landscape_1d,
    landscape_2d,
    top_eigenvalue,
)
from clinfuse.evaluation.metrics import headline_metric, task_metrics
from clinfuse.evaluation.probes import probe_probabilities
from clinfuse.models.losses import task_loss
from clinfuse.pipeline.alignment import model_encoders
from clinfuse.pipeline.data import Cohort, SplitTensors, load_cohort, split_tensors
from clinfuse.pipeline.explanations import explain_cohort, log_reliance_tables, write_reliance_tables
from clinfuse.pipeline.inference import load_trained_model, predict_split
from clinfuse.pipeline.results import read_evaluation
from clinfuse.pipeline.runs import read_run_config, read_train_summary, run_name


def _subset(t: SplitTensors, n: int) -> dict:
    """The first n rows of a split, as one batch (fixed, in row order)."""
    return t.batch(torch.arange(min(n, len(t))))


def _fused_loss(model, batch, task_type) -> torch.Tensor:
    return task_loss(model(batch["inputs"], batch["present"]).fused, batch["y"], task_type)


def _scopes(model) -> tuple[dict[str, list[torch.Tensor]], str | None]:
    """{"all": params, <encoder>: params...} and why per-encoder scopes are missing (or None)."""
    params = [p for p in model.parameters() if p.requires_grad]
    encoders = model_encoders(model)
    if not encoders:
        return {"all": params}, "the model exposes no `encoders` ModuleDict"
    return {"all": params, **{m: [p for p in e.parameters() if p.requires_grad] for m, e in encoders.items()}}, None


class _EncodedOnce(torch.nn.Module):
    """An encoder that answers a repeated call on the very same input objects with the features it gave.

    Only for an encoder whose weights stay put while another scope's weights move: in eval mode
    the same weights on the same tensors give the same features, so reusing them changes no loss
    by a bit (the features are constants for the moving scope's derivatives too). Other inputs are
    encoded afresh, and an encoder in training mode (batch statistics) is always called.
    """

    KEEP = 4  # a landscape repeats one batch, a Hessian `analyze.hessian_batches` (1 by default)

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder
        self._seen: list[tuple[tuple, Any]] = []  # ((grad mode, *inputs), features); held inputs keep `is` sound

    def forward(self, *inputs):
        if self.encoder.training:
            return self.encoder(*inputs)
        key = (torch.is_grad_enabled(), *inputs)  # the grad mode can pick the kernel (see below)
        for seen, features in self._seen:
            if len(seen) == len(key) and all(a is b for a, b in zip(seen, key, strict=True)):  # True is True
                return features
        # Encoded in the caller's grad mode, as without reuse: some modules take another kernel under
        # no_grad (nn.TransformerEncoder's fast path) and would change the last bits. Detached, since a
        # scope that holds this encoder still takes no derivative through it.
        features = _detached(self.encoder(*inputs))
        # A model that rebuilds its inputs on every call never repeats them: keep a few, not all.
        self._seen = [*self._seen[-(self.KEEP - 1):], (key, features)]
        return features


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


@contextmanager
def others_encoded_once(model, scope: str) -> Iterator[None]:
    """While only encoder `scope`'s weights move, every other encoder encodes a fixed batch once.

    A landscape or Hessian per encoder evaluates the fused loss dozens of times on the same batch;
    on ADNI nearly all of a forward pass is the MRI encoder, whose features do not change while the
    tabular encoder's weights move. Scope "all" (every weight moves) reuses nothing, nor does an
    encoder that shares a weight with the scope. The model's `encoders` are restored on exit, also
    after an error.
    """
    named = model_encoders(model)
    if not named or scope not in named:
        yield  # scope "all" (every weight moves) or a model without named encoders: nothing is fixed
        return
    moving = {id(p) for p in named[scope].parameters()}
    # An encoder sharing a weight with the scope (one module under two names) moves with it.
    fixed = {m: e for m, e in named.items()
             if m != scope and not any(id(p) in moving for p in e.parameters())}
    try:
        for m, encoder in fixed.items():
            model.encoders[m] = _EncodedOnce(encoder)
        yield
    finally:
        for m, encoder in fixed.items():
            model.encoders[m] = encoder


def flatness_of_run(model, train: SplitTensors, task_type: str, settings) -> list[dict]:
    """Per-encoder Hutchinson trace (+ SE) per parameter and top eigenvalue of the fused loss."""
    batches = [train.batch(torch.arange(i * settings.batch_size, min((i + 1) * settings.batch_size, len(train))))
               for i in range(settings.hessian_batches) if i * settings.batch_size < len(train)]

    def terms():
        return (_fused_loss(model, b, task_type) / len(batches) for b in batches)

    scopes, _ = _scopes(model)
    rows = []
    for name, params in scopes.items():
        if name == "all" and len(scopes) > 1:
            continue  # per encoder when encoders are named; whole network otherwise
        with others_encoded_once(model, name):
            trace = hutchinson_trace(terms, params, settings.hutchinson_vectors,
                                     torch.Generator().manual_seed(settings.seed),
                                     target_rel_se=settings.trace_target_rel_se,
                                     max_vectors=settings.hutchinson_max_vectors)
            eig = top_eigenvalue(terms, params, settings.power_iters, tol=settings.power_tol,
                                 generator=torch.Generator().manual_seed(settings.seed + 1))
        n = trace["n_params"]
        rows.append({"encoder": name, "n_params": n, "trace": trace["trace"], "trace_se": trace["se"],
                     "trace_per_param": trace["trace"] / n, "se_per_param": (trace["se"] or 0.0) / n,
                     "n_vectors": trace["n_vectors"], "target_rel_se": trace["target_rel_se"],
                     "se_reached": trace["se_reached"], "eigenvalue": eig["eigenvalue"],
                     "power_iterations": eig["iterations"], "power_converged": eig["converged"],
                     "eigenvalue_status": eigenvalue_status(eig["eigenvalue"], eig["converged"])})
    return rows


def landscapes_of_run(model, train: SplitTensors, test: SplitTensors, task_type: str, settings) -> dict:
    """1D and 2D losses per scope and split, along directions seeded by `s.seed` (same for all methods)."""
    data = {"train": _subset(train, settings.landscape_samples), "test": _subset(test, settings.landscape_samples)}
    a1 = np.linspace(-settings.landscape_span, settings.landscape_span, settings.landscape_points_1d)
    a2 = np.linspace(-settings.landscape_span, settings.landscape_span, settings.landscape_points_2d)
    scopes, _ = _scopes(model)
    out: dict[str, Any] = {"alphas_1d": a1.tolist(), "alphas_2d": a2.tolist(), "scopes": {}}
    for name, params in scopes.items():
        g = torch.Generator().manual_seed(settings.seed)
        d1, d2 = filter_normalized_direction(params, g), filter_normalized_direction(params, g)
        res = {}
        for split, batch in data.items():
            if not len(batch["y"]):
                continue

            def loss(batch=batch):
                return _fused_loss(model, batch, task_type)

            with others_encoded_once(model, name):
                res[f"{split}_1d"] = landscape_1d(loss, params, d1, a1).tolist()
                res[f"{split}_2d"] = landscape_2d(loss, params, d1, d2, a2, a2).tolist()
        out["scopes"][name] = res
    return out


@torch.no_grad()
def _features(model, tensors: SplitTensors, rows: int, batch_size: int = 256) -> dict[str, np.ndarray]:
    feats: dict[str, list] = {}
    idx = torch.arange(min(rows, len(tensors)))
    for start in range(0, len(idx), batch_size):
        b = tensors.batch(idx[start:start + batch_size])
        for m, f in model(b["inputs"], b["present"]).features.items():
            feats.setdefault(m, []).append(f.float().cpu().numpy())
    return {m: np.concatenate(v) for m, v in feats.items()}


def probes_of_run(model, train: SplitTensors, test: SplitTensors, cohort: Cohort, settings) -> dict[str, dict]:
    """Linear-probe test metrics per modality, on samples where that modality is present."""
    tr, te = _features(model, train, settings.probe_max_train), _features(model, test, len(test))
    n_tr = min(settings.probe_max_train, len(train))
    ytr, yte = train.y[:n_tr].cpu().numpy(), test.y.cpu().numpy()
    out = {}
    for m in tr:
        ptr, pte = train.present[m][:n_tr].cpu().numpy(), test.present[m].cpu().numpy()
        probs, constant = probe_probabilities(tr[m][ptr], ytr[ptr], te[m][pte], cohort.task_type, cohort.num_outputs,
                                              settings.probe_c)
        metrics = task_metrics(cohort.task_type, yte[pte], probs, cohort.label_names)
        out[m] = {"score": metrics[metrics["headline"]], "metric": metrics["headline"], "n_train": int(ptr.sum()),
                  "n_test": int(pte.sum()), "constant_labels": [cohort.label_names[k] for k in constant]}
    return out


def _test_headline(run: Path, evals_dir: Path | None, cohort: Cohort) -> float | None:
    """A run's test headline: from its evaluation when there is one, else predicted here."""
    if evals_dir is not None and (evals_dir / run.name / "metrics.json").is_file():
        m = read_evaluation(evals_dir / run.name / "metrics.json")["test"]
        return m[m["headline"]]
    rows, probs = predict_split(run, cohort, "test")
    y = cohort.labels(rows)
    m = task_metrics(cohort.task_type, y, probs, cohort.label_names)
    return m[m["headline"]]


def collect_variant_runs(runs_dir: Path, evals_dir: Path | None, cohort: Cohort) -> list[dict]:
    """Every finished run of the cohort with its method, seed, options, label-noise rate and test metric.

    Runs come from the cohort's runs folder and from its MLflow experiment (`clinfuse/<cohort>`:
    runs made by `dvc exp run --queue` live in the experiments' own copies, but log there);
    a run in both counts once.
    """
    records, seen = [], set()
    for run in sorted(p.parent for p in Path(runs_dir).glob("*/train_summary.json")):
        config = read_run_config(run)
        summary = read_train_summary(run)
        seen.add(summary.get("mlflow_run_id"))
        records.append({"run": run.name, "method": config["method_name"], "seed": config["seed"],
                        "options": config["method"].get("options", {}),
                        "label_noise": float(config["train"].get("label_noise", 0.0)),
                        "value": _test_headline(run, evals_dir, cohort), "source": "runs folder"})
    records += _mlflow_runs(cohort, seen)
    return [r for r in records if r["value"] is not None]


def _mlflow_runs(cohort: Cohort, seen: set) -> list[dict]:
    from clinfuse.pipeline.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return []
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"clinfuse/{cohort.name}")
    if experiment is None:
        return []
    key = f"test_{headline_metric(cohort.task_type)}"
    out = []
    for run in client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  max_results=5000):
        p, metrics = run.data.params, run.data.metrics
        if run.info.run_id in seen or key not in metrics or "method_name" not in p:
            continue
        options = {k.split(".", 2)[2]: _number(v) for k, v in p.items() if k.startswith("method.options.")}
        out.append({"run": run.info.run_name, "method": p["method_name"], "seed": int(p.get("seed", 0)),
                    "options": options, "label_noise": float(p.get("train.label_noise", 0.0)),
                    "value": metrics[key], "source": f"mlflow {run.info.run_id}"})
    return out


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def noise_series(records: list[dict]) -> dict[str, list[tuple[float, float, float]]]:
    """method -> [(noise rate, mean, std over seeds)] for methods with at least one noisy run."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in records):
        by: dict[float, list[float]] = {}
        for r in records:
            if r["method"] == method:
                by.setdefault(r["label_noise"], []).append(r["value"])
        if any(rate > 0 for rate in by):
            out[method] = [(rate, *_mean_std(v)) for rate, v in sorted(by.items())]
    return out


def sensitivity_series(records: list[dict], method: str, names: list[str], reference: dict) -> dict:
    """option -> [(value, mean, std)] over clean runs of `method` whose OTHER options equal `reference`'s."""
    out = {}
    clean = [r for r in records if r["method"] == method and r["label_noise"] == 0]
    for name in names:
        by: dict[float, list[float]] = {}
        for r in clean:
            others = {k: v for k, v in r["options"].items() if k != name}
            if name in r["options"] and all(_number(str(reference.get(k))) == _number(str(v))
                                            for k, v in others.items() if k in reference):
                by.setdefault(float(r["options"][name]), []).append(r["value"])
        if len(by) > 1:
            out[name] = [(x, *_mean_std(v)) for x, v in sorted(by.items())]
    return out


def analyze_cohort(runs_dir: Path, evals_dir: Path | None, out: Path, methods: list[str], seeds: list[int],
                   settings, log_mlflow: bool = True) -> str:
    """Run every analysis for the sweep's runs of one cohort and write `out` (atomically)."""
    started = time.perf_counter()
    runs_dir = Path(runs_dir)
    seeds = list(seeds)[:1] if settings.seeds == "first" else list(seeds)
    sweep_runs = [runs_dir / run_name(m, s) for m in methods for s in seeds]
    missing = [r for r in sweep_runs if not (r / "train_summary.json").is_file()]
    if missing:
        raise InputError(f"{missing[0]}: not a finished run (no train_summary.json); train the sweep first")
    torch.manual_seed(settings.seed)
    configs = {run: read_run_config(run) for run in sweep_runs}
    # Unimodal runs are the probes' references (an encoder trained alone), not fusion methods to compare:
    # their other encoder never trained, so its flatness and probe would say nothing about the method.
    references = [r for r in sweep_runs if configs[r]["method"]["method"] == "unimodal"]
    sweep_runs = [r for r in sweep_runs if r not in references]
    methods = [m for m in methods if not any(configs[r]["method_name"] == m for r in references)]
    if not sweep_runs:
        raise InputError(f"{runs_dir}: the sweep has only unimodal runs; the analyses compare fusion methods")
    first = configs[sweep_runs[0]]
    cohort = load_cohort(first["cohort"])
    train, test = split_tensors(cohort, "train"), split_tensors(cohort, "test")
    headline = headline_metric(cohort.task_type)
    per_run, skipped = {}, []
    for run in sweep_runs:
        t0 = time.perf_counter()
        model, config = load_trained_model(run)
        model.eval()
        _, why = _scopes(model)
        if why:
            skipped.append({"run": run.name, "analysis": "per-encoder flatness, landscapes and probes", "reason": why})
        per_run[run.name] = {
            "method": config["method_name"], "seed": config["seed"],
            "flatness": flatness_of_run(model, train, cohort.task_type, settings),
            "landscape": landscapes_of_run(model, train, test, cohort.task_type, settings),
            "probes": probes_of_run(model, train, test, cohort, settings) if not why else {},
            "alignment": read_json(run / "alignment.json") if (run / "alignment.json").is_file() else None,
            "dominance": dominance_series(read_json(run / "history.json"), cohort.modalities)
            if (run / "history.json").is_file() else None,
            "seconds": None,
        }
        if per_run[run.name]["alignment"] is None:
            skipped.append({"run": run.name, "analysis": "gradient alignment",
                            "reason": "no alignment.json: trained with train.alignment_every = 0"})
        per_run[run.name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"  analysed {cohort.name}/{run.name} in {per_run[run.name]['seconds']:.1f} s", flush=True)

    probe_baselines = _unimodal_baselines(runs_dir, cohort, train, test, settings)
    for m in cohort.modalities:
        if m not in probe_baselines:
            skipped.append({"analysis": f"probe baseline {m}", "reason": f"no unimodal run with modality {m} in "
                            f"{runs_dir} (train one: clinfuse train --method unimodal with options.modality: {m})"})
    records = collect_variant_runs(runs_dir, evals_dir, cohort)
    reference = next((r["options"] for r in records if r["method"] == settings.sensitivity_method
                      and r["run"] == run_name(settings.sensitivity_method, seeds[0])), {})
    noise = noise_series(records)
    sensitivity = sensitivity_series(records, settings.sensitivity_method, settings.sensitivity_options, reference)
    efficiency = _efficiency(methods, first, cohort, settings) if settings.efficiency else None
    for name, grid in settings.sensitivity_grid.items():
        have = {x for x, *_ in sensitivity.get(name, [])}
        todo = [v for v in grid if not any(np.isclose(v, h) for h in have)]
        if todo and name in sensitivity:
            skipped.append({"analysis": f"sensitivity grid {name}", "reason": f"no runs yet at {todo}"})
    for method, points in noise.items():
        todo = [v for v in settings.noise_rates if not any(np.isclose(v, p[0]) for p in points)]
        if todo:
            skipped.append({"analysis": f"label-noise grid {method}", "reason": f"no runs yet at rates {todo}"})
    if not noise:
        skipped.append({"analysis": "label noise", "reason": "no run trained with train.label_noise > 0 "
                        "(see README: dvc exp run --queue -S train.label_noise=...)"})
    if not sensitivity:
        skipped.append({"analysis": "sensitivity", "reason": f"fewer than two values of any of "
                        f"{settings.sensitivity_options} among clean {settings.sensitivity_method} runs "
                        "(see README: the sensitivity grid)"})

    result = {"cohort": cohort.name, "task_type": cohort.task_type, "headline": headline, "runs": per_run,
              "probe_baselines": probe_baselines, "variant_runs": records, "label_noise": noise,
              "sensitivity": sensitivity, "efficiency": efficiency, "skipped": skipped,
              "settings": settings.model_dump(), "seconds": None}
    figures = _figures(result, headline, seeds[0], settings.sensitivity_method)
    if settings.explain:  # modality Shapley values, cases, the randomisation check (pipeline/explanations.py)
        result["explanations"], explain_figures, reliance_tables = explain_cohort(
            sweep_runs, cohort, evals_dir, settings, split_tensors(cohort, "val"), test)
        figures.update(explain_figures)
    result["figures"] = sorted(figures)
    result["seconds"] = round(time.perf_counter() - started, 1)
    with atomic_dir(out, "analysis") as tmp:
        (tmp / "figures").mkdir()
        for name, png in figures.items():
            (tmp / "figures" / f"{name}.png").write_bytes(png)
        write_json(tmp / "analysis.json", result)
        write_json(tmp / "skipped.json", skipped)
        if settings.explain:
            write_reliance_tables(tmp, reliance_tables)
    if log_mlflow:
        _log_to_mlflow(result, sweep_runs, out)
        if settings.explain:
            log_reliance_tables(sweep_runs, out)
    return (f"analysis {cohort.name}: {len(per_run)} runs, {len(figures)} figures, {len(skipped)} skipped "
            f"-> {out} in {result['seconds']:.1f} s")


def _unimodal_baselines(runs_dir: Path, cohort: Cohort, train, test, settings) -> dict[str, dict]:
    """Probe score of each modality's encoder trained ALONE (the unimodal method's runs), when present."""
    out = {}
    for run in sorted(p.parent for p in runs_dir.glob("*/train_summary.json")):
        config = read_run_config(run)
        if config["method"]["method"] != "unimodal" or config["train"].get("label_noise", 0):
            continue
        m = config["method"]["options"].get("modality")
        if m in out:
            continue
        model, _ = load_trained_model(run)
        score = probes_of_run(model, train, test, cohort, settings).get(m)
        if score:
            out[m] = {"run": run.name, **score}
    return out


def _efficiency(methods: list[str], config: dict, cohort: Cohort, settings) -> dict:
    """Table 10's figures for the cohort's fusion methods, measured here, in this process, on CPU with one
    thread, timed by CPU time (the stage may share the machine); pipeline/efficiency.py restores the
    stage's thread count and random state afterwards."""
    from clinfuse.evaluation.efficiency import CLOCKS
    from clinfuse.pipeline.config import load_section
    from clinfuse.pipeline.efficiency import measure_methods, memory_description
    from clinfuse.pipeline.settings.methods import MethodConfig, method_path

    specs = {}
    for name in methods:
        cfg = load_section(MethodConfig, method_path(name))
        specs[name] = (cfg.method, cfg.options)
    shapes = {m: tuple(s) for m, s in config["input_shapes"].items()}
    rows = measure_methods(specs, config["encoders"], shapes, cohort.num_outputs, cohort.task_type,
                           settings.efficiency_batch, settings.efficiency_repeats, settings.efficiency_warmup,
                           "cpu", 1, "cpu")
    return {"device": "cpu", "threads": 1, "batch": settings.efficiency_batch, "clock": CLOCKS["cpu"][1],
            "repeats": settings.efficiency_repeats, "warmup": settings.efficiency_warmup,
            "process": "the analyze process, one method after another", "memory": memory_description("cpu"),
            "methods": rows}


def _figures(result: dict, headline: str, seed: int, sensitivity_method: str) -> dict[str, bytes]:
    """The figures, from the first seed's run of each method (numbers for every seed are in analysis.json)."""
    runs = {r["method"]: r for r in result["runs"].values() if r["seed"] == seed}
    figs = {}
    rows = [{"method": m, **row} for m, r in runs.items() for row in r["flatness"]]
    if rows:
        figs["flatness"] = plots.flatness_figure(rows)
    first = next(iter(runs.values()))["landscape"]
    scopes = list(first["scopes"])
    curves = {sc: {m: {"train": r["landscape"]["scopes"][sc]["train_1d"],
                       "test": r["landscape"]["scopes"][sc].get("test_1d", [np.nan] * len(first["alphas_1d"]))}
                   for m, r in runs.items()} for sc in scopes}
    figs["landscape_1d"] = plots.landscape_1d_figure(curves, first["alphas_1d"])
    for split in ("train", "test"):
        grids = {sc: {m: r["landscape"]["scopes"][sc][f"{split}_2d"] for m, r in runs.items()
                      if f"{split}_2d" in r["landscape"]["scopes"][sc]} for sc in scopes}
        if any(grids.values()):
            figs[f"landscape_2d_{split}"] = plots.landscape_2d_figure(grids, first["alphas_2d"], first["alphas_2d"],
                                                                      split)
    figs["landscape_surface"] = plots.landscape_surface_figure(
        {m: r["landscape"]["scopes"]["all"]["train_2d"] for m, r in runs.items()}, first["alphas_2d"],
        first["alphas_2d"], "Training loss surface, all parameters")
    series = {m: r["alignment"] for m, r in runs.items() if r["alignment"]}
    if series:
        figs["alignment"] = plots.alignment_figure(series)
    dominance = {m: r["dominance"] for m, r in runs.items() if r.get("dominance")}
    if dominance:
        figs["dominant_modality"] = plots.dominance_figure(dominance)
    probe_rows = [{"modality": mod, "method": m, "score": v["score"],
                   "baseline": result["probe_baselines"].get(mod, {}).get("score")}
                  for m, r in runs.items() for mod, v in r["probes"].items() if v["score"] is not None]
    if probe_rows:
        figs["probes"] = plots.probe_figure(probe_rows, headline)
    if result["label_noise"]:
        figs["label_noise"] = plots.metric_vs_figure(result["label_noise"], "training label-noise rate (fraction flipped)",
                                                     headline, "Label-noise robustness")
    if result["sensitivity"]:
        figs["sensitivity"] = plots.sensitivity_figure(result["sensitivity"], headline, sensitivity_method)
    if result["efficiency"]:
        figs["efficiency"] = plots.efficiency_figure(result["efficiency"]["methods"],
                                                     f"{result['efficiency']['device']}, batch "
                                                     f"{result['efficiency']['batch']}")
    return figs


def _log_to_mlflow(result: dict, sweep_runs: list[Path], out: Path) -> None:
    """Per-run sharpness and probe numbers as metrics, the figures as artifacts of each sweep run."""
    import mlflow

    from clinfuse.pipeline.tracking import setup_mlflow

    setup_mlflow(f"clinfuse/{result['cohort']}")
    for run in sweep_runs:
        run_id = read_train_summary(run).get("mlflow_run_id")
        if not run_id:
            continue
        try:
            mlflow.MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            print(f"  note: training run {run_id} is not in the tracking store; analysis not attached to it")
            continue
        r = result["runs"][run.name]
        metrics = {}
        for row in r["flatness"]:
            metrics[f"analysis/trace_per_param_{row['encoder']}"] = row["trace_per_param"]
            if row.get("eigenvalue_status", "ok") == "ok":  # a negative or unconverged value is no sharpness
                metrics[f"analysis/top_eigenvalue_{row['encoder']}"] = row["eigenvalue"]
        for mod, v in r["probes"].items():
            if v["score"] is not None:
                metrics[f"analysis/probe_{mod}"] = v["score"]
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(out / "figures"), artifact_path="analysis")
            mlflow.log_artifact(str(out / "analysis.json"), artifact_path="analysis")
